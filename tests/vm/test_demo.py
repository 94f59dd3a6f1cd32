"""`make demo`'s scenario, asserted: PXE (UEFI) -> deploy the demo OS with its state -> reboot into it -> the
new OS is the task's machine (host name, fresh machine-id, new SSH host key, static address) and its first boot
reports completion to the DP under the same deployment id. The DP goes down for a while in the middle of the
image transfer: the transfer resumes, and the status events the PE could not post then arrive later, in order,
so the DP's timeline runs whole from the PXE boot to the first-boot report."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from peagent.disk.mount import mounted
from tests.vm.conftest import BUILD, ROOT
from tests.vm.demo import DEMO_ADDRESS, DEMO_MAC, run_demo

OUTAGE = 15  # seconds the DP is down during the transfer: longer than the PE's status backoff, shorter than a fetch's retries


def inspect_new_os(disk: Path, seen: dict) -> None:
    """Between deploy and first boot: what the PE wrote into the new OS (the demo image's root is partition 2)."""
    # The root partition, by its offset (sfdisk reads the GPT the PE wrote): no partition scan, which loop
    # devices do not reliably do here.
    parts = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]["partitions"]
    root_part = next(p for p in parts if p["node"].endswith("2"))
    loop = subprocess.run(["losetup", "--find", "--show", "--read-only", "--offset", str(root_part["start"] * 512),
                           "--sizelimit", str(root_part["size"] * 512), str(disk)], check=True, capture_output=True,
                          text=True).stdout.strip()
    try:
        with mounted(loop, "ext4", readonly=True) as root:
            seen["hostname"] = (root / "etc/hostname").read_text()
            seen["hosts"] = (root / "etc/hosts").read_text()
            seen["machine_id"] = (root / "etc/machine-id").read_text()
            seen["host_keys"] = sorted(p.name for p in (root / "etc/ssh").glob("ssh_host_*"))
            seen["network"] = {p.name: p.read_text() for p in (root / "etc/systemd/network").glob("10-peagent-*")}
            seen["record"] = json.loads((root / "var/lib/peagent/deployment.json").read_text())
            seen["unit"] = (root / "etc/systemd/system/multi-user.target.wants/peagent-firstboot.service").is_symlink()
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


def test_demo_deploys_and_boots_the_new_os(pe: Path, workdir: Path, netns) -> None:
    demo = BUILD / "demo"
    subprocess.run([str(ROOT / "demo/os/build.sh"), str(demo)], check=True)  # a cache hit after `make`
    seen: dict = {}
    result = run_demo(workdir / "demo", pe, demo, netns.prefix(), after_deploy=lambda disk: inspect_new_os(disk, seen),
                      outage=OUTAGE, screenshot=workdir / "dashboard.png")

    # What the PE left for the first boot: the task's name, first-boot semantics, no host keys, the address.
    assert seen["hostname"] == "demo-0042\n" and "127.0.1.1\tdemo-0042" in seen["hosts"]
    assert seen["machine_id"] == "uninitialized\n"
    assert seen["host_keys"] == []
    [network] = seen["network"].values()
    assert f"MACAddress={DEMO_MAC}" in network and f"Address={DEMO_ADDRESS}" in network
    assert seen["record"]["image"]["name"] == "demo-os" and seen["record"]["image"]["digest"].startswith("sha256:")
    assert seen["unit"]

    # The first boot: the task's host name, a machine-id made on this boot, a new host key, the static address,
    # and the completion report delivered.
    assert "hostname=demo-0042" in result.up_line and "firmware=uefi" in result.up_line
    fields = dict(w.split("=", 1) for w in result.firstboot_line.split() if "=" in w)
    assert result.firstboot_line.startswith("peagent-firstboot: complete")
    assert fields["hostname"] == "demo-0042"
    assert re.fullmatch(r"[0-9a-f]{32}", fields["machine-id"]) and f"machine-id={fields['machine-id']}" in result.up_line
    assert fields["ssh"].startswith("SHA256:")
    assert DEMO_ADDRESS in fields["addresses"].split(",")
    assert fields["status"] == "posted"

    deployment = seen["record"]["deployment_id"]
    assert deployment == result.deployment_id and re.fullmatch(r"demo-[0-9a-z]+", deployment)
    events = result.events
    assert {e["deployment_id"] for e in events} == {deployment}
    # The timeline: the DP's own events (the PXE boot script, the task handed out), the PE's, the first boot's.
    sources = [e["source"] for e in events]
    assert sources == sorted(sources, key=["server", "pe", "firstboot"].index)
    server = [e for e in events if e["source"] == "server"]
    assert [e["phase"] for e in server][:2] == ["pxe", "task"]
    # Every PE event arrived exactly once and in order, the outage notwithstanding: 1, 2, 3, ... without a gap.
    pe_events = [e for e in events if e["source"] == "pe"]
    assert [e["seq"] for e in pe_events] == list(range(1, len(pe_events) + 1))
    assert [e["time"] for e in pe_events] == sorted(e["time"] for e in pe_events)
    assert result.outage_at is not None
    assert max(e["retries"] for e in pe_events) > 0  # the transfer felt the outage, and retried through it
    phases = [e["phase"] for e in pe_events if e["done"] is None]
    assert phases[:2] == ["inventory", "task"], phases
    for earlier, later in (("task", "image"), ("image", "write"), ("write", "state"), ("state", "done")):
        assert phases.index(earlier) < phases.index(later), phases
    assert any(e["phase"] == "write" and e["done"] is not None for e in pe_events)  # progress with bytes
    # The new OS carries the PE's events in its record, and the first boot closed the deployment.
    assert [e["id"] for e in seen["record"]["events"]] == [e["id"] for e in pe_events[:len(seen["record"]["events"])]]
    complete = events[-1]
    assert complete["source"] == "firstboot" and complete["phase"] == "complete"
    assert complete["machine"]["hostname"] == "demo-0042" and complete["data"]["machine_id"] == fields["machine-id"]
    assert (workdir / "dashboard.png").stat().st_size > 10_000
    print(f"\nfigure: demo PXE+deploy {result.deploy_seconds:.0f} s, new OS up after {result.first_boot_seconds:.0f} s")
