"""`make demo`'s scenario, asserted: PXE (UEFI) -> deploy the demo OS with its state -> reboot into it -> the
new OS is the task's machine (host name, fresh machine-id, new SSH host key, static address) and its first boot
reports completion to the DP under the same deployment id."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from peagent.disk.mount import mounted
from tests.vm.conftest import BUILD, ROOT
from tests.vm.demo import DEMO_ADDRESS, DEMO_MAC, run_demo


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
    result = run_demo(workdir / "demo", pe, demo, netns.prefix(), after_deploy=lambda disk: inspect_new_os(disk, seen))

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
    # Every event from the task on, the first boot's included, carries the deployment id (the inventory comes first).
    assert result.events[0]["phase"] == "inventory"
    assert {e["deployment_id"] for e in result.events[1:]} == {deployment}
    phases = [e["phase"] for e in result.events if e["message"] != "progress"]
    assert phases[:4] == ["inventory", "task", "image", "write"] and phases[-1] == "complete"
    assert phases.index("done") < phases.index("complete")
    assert "state" in phases and "boot" in phases
    complete = result.events[-1]
    assert complete["machine"]["hostname"] == "demo-0042" and complete["machine"]["machine_id"] == fields["machine-id"]
    print(f"\nfigure: demo PXE+deploy {result.deploy_seconds:.0f} s, new OS up after {result.first_boot_seconds:.0f} s")
