"""Driver injection, end to end: a VM whose only NIC is an Intel e1000 and whose disk is NVMe, a Linux
image without the e1000 module (the demo OS leaves it out), and a driver store on the DP that has it,
and an NVMe host driver for QEMU machines.

The PE matches the VM's hardware against the store's signed index, fetches only the matching packages
(not the others beside them), verifies them, and injects them into the new OS (updates/ and depmod);
the NVMe driver, a storage driver, also goes into the initramfs, rebuilt in a chroot of the new OS.
The new OS then boots from NVMe through that initramfs, and has a network only if the injected e1000
loads at its first boot: its first-boot report reaching the DP over that NIC, and the task's check
that both modules are loaded from updates/, show it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from peagent.drivers.store import index_store, write_index
from peagent.image.sign import load_private_key
from tests.support.dp import DPProcess
from tests.support.kmod import make_module
from tests.vm.conftest import BUILD, ROOT
from tests.vm.demo import signed_image
from tests.vm.pe import STATUS, blank_disk, direct, exit_status
from tests.vm.qemu import VM, Drive, Machine

DISK_SERIAL = "DRIVERS-DISK-01"


def driver_store(demo: Path, where: Path) -> None:
    """The demo build's store (intel-e1000), plus packages this VM must not get."""
    shutil.copytree(demo / "drivers", where)
    decoy = "\0".join(["alias=pci:v000010ECd00008168sv*sd*bc*sc*i*", "name=r8169",
                       "vermagic=6.1.0-56-amd64 SMP preempt mod_unload"]).encode() + b"\0"
    (where / "linux/_generic/_generic/realtek-r8169").mkdir(parents=True)
    (where / "linux/_generic/_generic/realtek-r8169/r8169.ko").write_bytes(make_module(decoy))
    (where / "windows/_generic/_generic/_generic/amd64/intel-lan").mkdir(parents=True)
    (where / "windows/_generic/_generic/_generic/amd64/intel-lan/e1g.inf").write_text(
        '[Version]\nSignature="$Windows NT$"\nClass=Net\nDriverVer=01/01/2020,1.0.0.0\n[Manufacturer]\n'
        'Intel=Intel,NTamd64\n[Intel.NTamd64]\nE1000=E1000.ndi, PCI\\VEN_8086&DEV_100E\n')


def test_the_matching_driver_is_injected_and_loads_at_first_boot(pe: Path, workdir: Path, netns) -> None:
    demo = BUILD / "demo"
    subprocess.run([str(ROOT / "demo/os/build.sh"), str(demo)], check=True)  # a cache hit after `make`
    image, key = signed_image(demo)
    dp = workdir / "dp"
    (dp / "images").mkdir(parents=True)
    (dp / "images/demo-os").symlink_to(image.resolve())
    driver_store(demo, dp / "drivers")
    index = index_store(dp / "drivers")
    assert not index.warnings, index.warnings
    write_index(index, dp / "drivers", load_private_key(demo / "keys/peagent.key"))
    task = {"version": 1, "id": "drivers-1", "target": {"hints": {"serial": DISK_SERIAL}},
            "image": {"manifest": "images/demo-os/manifest.json"},
            "drivers": {"index": "drivers/index.json"},
            "state": {"computer_name": "drivers-vm",
                      "first_boot_commands": [
                          "echo \"peagent-test: $(grep '^e1000 ' /proc/modules)\" > /dev/ttyS0",
                          "echo \"peagent-test-nvme: $(modinfo -F filename nvme)\" > /dev/ttyS0"]},
            "status": STATUS, "after": "reboot"}
    (dp / "tasks").mkdir()
    (dp / "tasks/default.json").write_text(json.dumps(task))
    disk = blank_disk(workdir / "disk.img", 2 << 30)

    with DPProcess(dp, netns.prefix()) as server:
        params = f"peagent.dp={server.guest_url} peagent.status={server.guest_url}status peagent.key={key}"
        machine = direct(pe, params, [Drive(disk, "nvme", serial=DISK_SERIAL)], nic="e1000")
        with VM(machine, workdir, netns.prefix(), name="deploy") as vm:
            assert exit_status(vm, timeout=900) == 0, vm.tail()
            console = vm.console
            vm.expect(r"power: reboot", 60)
            vm.wait_exit(60)
        # Only the matching package was fetched, and it went where the new OS's kernel looks first.
        assert (f"drivers: index drivers/index.json: {len(index.packages)} packages, trusted by a trusted key's "
                "signature") in console
        assert ": linux/_generic/_generic/intel-e1000 (module e1000, group generic); matched " \
               "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00 ~ pci:v00008086d0000100Esv*sd*bc*sc*i*" in console
        assert "realtek-r8169" not in console.split("drivers: index")[1]
        assert "drivers: module e1000 -> /lib/modules/" in console and "/updates/peagent/e1000.ko" in console
        assert "drivers: depmod " in console
        assert ": linux/QEMU/_generic/nvme-host (module nvme, group QEMU/*)" in console  # the machine's make
        assert "/updates/peagent/nvme.ko" in console
        assert "drivers: initramfs 6.1.0-" in console and ": rebuilt in a chroot with nvme (update-initramfs)" in console

        boot = Machine(firmware="bios", nic="e1000", drives=[Drive(disk, "nvme", serial=DISK_SERIAL, bootindex=0)])
        with VM(boot, workdir, netns.prefix(), name="firstboot") as vm:
            loaded = vm.expect(r"peagent-test: ([^\n]*)\n", 600).group(1)
            nvme = vm.expect(r"peagent-test-nvme: ([^\n]*)\n", 60).group(1)
            report = vm.expect(r"(peagent-firstboot: [^\n]*)\n", 300).group(1)
        events = server.events()
    assert loaded.startswith("e1000 ") and " Live " in loaded  # /proc/modules: the injected module is loaded
    assert "/updates/peagent/nvme.ko" in nvme  # the NVMe driver the OS runs from is the injected one
    assert "hostname=drivers-vm" in report and "commands=ok" in report
    assert "status=posted" in report  # over the e1000 NIC: the only network this OS has
    assert events[-1]["phase"] == "complete" and events[-1]["deployment_id"].startswith("drivers-1-")
    drivers = [e["message"] for e in events if e["phase"] == "drivers"]
    assert any("intel-e1000" in m for m in drivers)
