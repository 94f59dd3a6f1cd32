"""The demo: a VM boots the PE by PXE (UEFI, OVMF + iPXE) from the built-in DP, deploys the demo
OS (a signed peagent image; the PE trusts the demo key given on its command line) to its disk,
gives it its state (a host name made from the machine's serial number, a static address, a boot
entry), reboots, and comes up in the new OS, whose first boot reports completion to the DP.

The DP is ``peagent serve``: its rules (``peagent-serve.json``) give the machine with the demo's
serial number the demo task, once; the machine's iPXE asks for its boot script by identity, so the
deployment's timeline starts at the PXE boot and ends with the first-boot report, all on the
dashboard (``http://127.0.0.1:8080/`` while ``make demo`` runs; a screenshot is saved at the end).

``make demo`` runs it with the console shown live (``python -m tests.vm.demo``); the VM test
runs the very same scenario in a private network namespace, with a DP outage in the middle of the
image transfer, and asserts its outcome.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from peagent.image.build import BuildOptions, build_from
from peagent.image.sign import generate_keys
from tests.support.dp import DPProcess
from tests.vm.pe import blank_disk, exit_status
from tests.vm.qemu import VM, Drive, Machine

ROOT = Path(__file__).resolve().parents[2]
DEMO_DISK_SERIAL = "DEMO-DISK-0001"
DEMO_DISK_SIZE = 2 << 30
DEMO_SERIAL = "PEAGENT-DEMO-0042"  # the VM's SMBIOS serial: the task names the host after it
DEMO_MAC = "52:54:00:12:34:56"  # QEMU's first NIC
DEMO_ADDRESS = "10.0.2.50/24"  # static, in QEMU user networking's 10.0.2.0/24 (gateway .2, DNS .3)


@dataclass
class DemoResult:
    deploy_seconds: float  # QEMU start to the PE's power: reboot
    first_boot_seconds: float  # QEMU start (from disk) to the new OS's "up" line
    up_line: str
    firstboot_line: str  # the first-boot unit's report
    events: list[dict]  # the deployment's timeline at the DP, in order
    deployment_id: str
    outage_at: str | None = None  # the console line at which the DP was stopped, when it was


def signed_image(demo: Path) -> tuple[Path, str]:
    """The demo OS as a signed peagent image (built once per demo OS build) and the public key."""
    info = json.loads((demo / "demo-os.json").read_text())
    keys, image = demo / "keys", demo / "peagent-image"
    if not (keys / "peagent.key").exists():
        generate_keys(keys)
    stamp = image / "built-from.sha256"
    if not stamp.exists() or stamp.read_text() != info["sha256"]:
        shutil.rmtree(image, ignore_errors=True)
        build_from(str(demo / "demo-os.img"), str(image), BuildOptions(name="demo-os", version=info["sha256"][:12]),
                   key=keys / "peagent.key")
        stamp.write_text(info["sha256"])
    return image, (keys / "peagent.pub").read_text().strip()


def prepare(work: Path, pe: Path, demo: Path, dp_port: int) -> tuple[Path, Path]:
    """The DP directory (PE, boot.ipxe, image, task) and the TFTP root (iPXE first stage)."""
    image, key = signed_image(demo)
    dp = work / "dp"
    for d in ("pe", "images", "tasks"):
        (dp / d).mkdir(parents=True)
    for name in ("vmlinuz", "initrd.zst"):
        (dp / "pe" / name).symlink_to(pe.resolve() / name)
    (dp / "images" / "demo-os").symlink_to(image.resolve())
    shutil.copy(ROOT / "netboot/ipxe/boot.ipxe", dp)
    task = {
        "version": 1,
        "id": "demo",  # the DP makes each deployment's id from it (demo-<random>) and adds its status token
        "target": {"hints": {"serial": DEMO_DISK_SERIAL}},
        "image": {"manifest": "images/demo-os/manifest.json"},
        "state": {
            "computer_name": "demo-{serial[-4:]}",
            "network": [{"mac": DEMO_MAC, "addresses": [DEMO_ADDRESS], "gateway": "10.0.2.2", "dns": ["10.0.2.3"]}],
        },
        "after": "reboot",
    }
    (dp / "tasks" / "demo.json").write_text(json.dumps(task, indent=2) + "\n")
    # The assignment: this machine (by its SMBIOS serial) gets the demo task once; nobody else gets anything.
    rules = {"unknown": "refuse",
             "rules": [{"name": "demo", "match": {"serial": DEMO_SERIAL}, "task": "tasks/demo.json", "once": True}]}
    (dp / "peagent-serve.json").write_text(json.dumps(rules, indent=2) + "\n")
    tftp = work / "tftp"
    tftp.mkdir()
    shutil.copy(ROOT / "netboot/ipxe/peagent.ipxe", tftp)
    (tftp / "peagent-site.ipxe").write_text(
        "#!ipxe\n"
        f"set peagent-dp http://10.0.2.2:{dp_port}\n"
        f"set peagent-extra peagent.key={key}\n")
    return dp, tftp


def run_demo(work: Path, pe: Path, demo: Path, netns_prefix: list[str] | None = None,
             tee: TextIO | None = None, port: int = 8080,
             after_deploy: Callable[[Path], None] | None = None, outage: float = 0,
             screenshot: Path | None = None) -> DemoResult:
    """The demo; ``after_deploy(disk)`` may look at the disk between the deploy and the first boot.

    ``outage``: seconds the DP is stopped for once the image transfer is under way (images and
    status both go: the transfer resumes and the events wait in the PE's journal). ``screenshot``:
    where to save the dashboard showing the deployment, at the end.
    """
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dp_root, tftp = prepare(work, pe, demo, port)
    disk = blank_disk(work / "disk.img", DEMO_DISK_SIZE)
    nvram = work / "OVMF_VARS.fd"
    say = (lambda msg: print(f"\n=== demo: {msg}", file=tee, flush=True)) if tee else (lambda msg: None)

    smbios = ["-smbios", f"type=1,serial={DEMO_SERIAL}"]
    with DPProcess(dp_root, netns_prefix, port=port) as dp:
        say(f"DP serving {dp_root} on 127.0.0.1:{port}; PXE-booting a UEFI VM with a blank disk")
        machine = Machine(firmware="uefi", pxe=True, tftp_dir=tftp, bootfile="peagent.ipxe", uefi_vars=nvram,
                          drives=[Drive(disk, "virtio", serial=DEMO_DISK_SERIAL)], extra=smbios)
        outage_at = None
        with VM(machine, work, netns_prefix, name="deploy", tee=tee) as vm:
            if outage:
                # A progress line of the transfer: the image is being fetched and written right now.
                outage_at = vm.expect(r"write: [0-9.]+/[0-9.]+ MiB", 900).group(0)
                say(f"DP outage: stopping the DP for {outage:.0f} s in the middle of the transfer")
                dp.stop()
                time.sleep(outage)
                dp.start()
                say("DP back (same directory and status database)")
            status = exit_status(vm, timeout=900)
            if status != 0:
                raise AssertionError(f"the deploy failed with exit status {status}\n{vm.tail()}")
            vm.expect(r"power: reboot", 60)
            deploy_seconds = vm.last_match_time
            vm.wait_exit(60)
        if after_deploy is not None:
            after_deploy(disk)

        say("deployed; rebooting the VM into its disk (the boot entry the PE set comes first)")
        # No bootindex: OVMF boots what BootOrder says, which the deploy set.
        machine = Machine(firmware="uefi", uefi_vars=nvram, nic="virtio-net-pci",
                          drives=[Drive(disk, "virtio", serial=DEMO_DISK_SERIAL)], extra=smbios)
        with VM(machine, work, netns_prefix, name="firstboot", tee=tee) as vm:
            # Up to the newline: the console may deliver the line in pieces.
            firstboot = vm.expect(r"(peagent-firstboot: [^\n]*)\n", 600).group(1)
            up = vm.expect(r"(peagent-demo-os: up [^\n]*)\n", 300).group(1)
            first_boot = vm.last_match_time
        events = dp.events()
        deployment_id = events[-1]["deployment_id"] if events else "?"
        if screenshot is not None:
            dashboard_screenshot(dp, deployment_id, screenshot)
    say(f"the new OS is up: {up}")
    say(f"its first boot: {firstboot}")
    return DemoResult(deploy_seconds, first_boot, up, firstboot, events, deployment_id, outage_at)


def dashboard_screenshot(dp: DPProcess, deployment_id: str, path: Path) -> None:
    """The dashboard with the deployment's timeline open, as headless chromium renders it."""
    script = ROOT / "tests/support/screenshot.py"
    subprocess.run([*dp.prefix, sys.executable, str(script), f"{dp.local_url}#/deployment/{deployment_id}", str(path)],
                   check=True, cwd=ROOT, timeout=120)


def timeline(events: list[dict]) -> str:
    """The deployment's events as the dashboard lists them: time, source, phase, message (progress folded)."""
    lines = []
    start = events[0]["time"] if events else 0.0
    for e in events:
        if e["done"] is not None and e["phase"] in ("write", "fetch", "apply", "erase") and e is not events[-1]:
            continue  # progress: the dashboard shows it as a bar
        lines.append(f"  +{e['time'] - start:6.1f} s  {e['source']:<9} {e['phase']:<10} {e['message'][:100]}")
    return "\n".join(lines)


def main() -> int:
    build = ROOT / "build"
    shot = build / "demo-run-dashboard.png"
    result = run_demo(build / "demo-run", build / "pe", build / "demo", tee=sys.stdout, screenshot=shot)
    host = next((w.split("=", 1)[1] for w in result.up_line.split() if w.startswith("hostname=")), "?")
    print(f"\n=== demo: the new OS's host name is {host} (the task's demo-{{serial[-4:]}}; serial {DEMO_SERIAL})")
    print(f"=== demo: done. PXE boot + deploy: {result.deploy_seconds:.0f} s; "
          f"boot of the new OS: {result.first_boot_seconds:.0f} s")
    print(f"=== demo: deployment {result.deployment_id} on the DP's dashboard, from PXE to the first boot:")
    print(timeline(result.events))
    print(f"=== demo: the dashboard: {shot}; console logs in {build / 'demo-run'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
