"""The PE boots on real firmware by every route, sees every kind of disk, and runs the agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm.pe import blank_disk, direct, exit_status, json_between, run_param, usb_stick_with_params
from tests.vm.qemu import Drive, Machine


def test_direct_kernel_sees_disks_on_every_bus_with_serials(pe: Path, workdir: Path, start_vm) -> None:
    drives = [
        Drive(blank_disk(workdir / "virtio.img", 64 << 20), "virtio", serial="VIRTIO0001"),
        Drive(blank_disk(workdir / "nvme.img", 96 << 20), "nvme", serial="NVME0001"),
        Drive(blank_disk(workdir / "sata.img", 128 << 20), "sata", serial="SATA0001"),
        Drive(blank_disk(workdir / "usb.img", 32 << 20), "usb", serial="USB0001"),
    ]
    cmd = "echo inv-begin; peagent inventory --json; echo inv-end"
    vm = start_vm(direct(pe, run_param(cmd), drives))
    vm.expect(r"run: running the peagent.run command", 120)
    agent_running = vm.last_match_time
    inventory = json_between(vm, "inv")
    assert exit_status(vm) == 0
    by_serial = {d["serial"]: d for d in inventory["disks"]}
    assert {s: (d["transport"], d["size"]) for s, d in by_serial.items()} == {
        "VIRTIO0001": ("virtio", 64 << 20),
        "NVME0001": ("nvme", 96 << 20),
        "SATA0001": ("sata", 128 << 20),
        "USB0001": ("usb", 32 << 20),
    }
    assert inventory["nics"] and inventory["nics"][0]["mac"] == "52:54:00:12:34:56"
    print(f"\nfigure: direct kernel boot, agent running at {agent_running:.1f} s")


def test_every_agent_module_imports_in_the_pe(pe: Path, workdir: Path, start_vm) -> None:
    """The PE build prunes Debian's packages hard; this proves it left everything the agent imports."""
    cmd = ("python3 -c 'import importlib, pkgutil, peagent; "
           "names = [m.name for m in pkgutil.walk_packages(peagent.__path__, \"peagent.\") "
           "if not m.name.endswith(\"__main__\")]; "
           "[importlib.import_module(n) for n in names]; print(\"imported\", len(names), \"modules\")'")
    vm = start_vm(direct(pe, run_param(cmd)))
    found = vm.expect(r"imported (\d+) modules\n", 120)
    assert exit_status(vm) == 0
    assert int(found.group(1)) > 50


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_usb_image_boots_and_reads_its_peagent_cfg(firmware, pe, workdir, start_vm) -> None:
    stick = usb_stick_with_params(pe, workdir, run_param("echo usb-ok"))
    vm = start_vm(Machine(firmware=firmware, drives=[Drive(stick, "usb", serial="PESTICK", bootindex=0)]))
    vm.expect(r"init: peagent PE .* firmware " + firmware.upper(), 180)
    vm.expect(r"params: read peagent.cfg from the boot medium /dev/sda1", 60)
    vm.expect(r"run: running the peagent.run command", 60)
    agent_running = vm.last_match_time
    vm.expect(r"usb-ok", 30)
    assert exit_status(vm) == 0
    print(f"\nfigure: USB image {firmware} boot, agent running at {agent_running:.1f} s")


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_iso_boots_as_usb_stick_and_the_agent_runs(firmware, pe, workdir, start_vm) -> None:
    iso = Drive(pe / "peagent.iso", "usb", serial="PEISO", bootindex=0, readonly=True)
    vm = start_vm(Machine(firmware=firmware, drives=[iso]))
    vm.expect(r"init: peagent PE .* firmware " + firmware.upper(), 180)
    vm.expect(r"agent: starting peagent deploy", 60)
    agent_running = vm.last_match_time
    # A read-only ISO carries no parameters: the agent must say what it lacks, and stop.
    vm.expect(r"error \[task.invalid\]: peagent.task: expected a task URL, or DPs", 60)
    assert exit_status(vm) == 2
    print(f"\nfigure: ISO-as-USB {firmware} boot, agent running at {agent_running:.1f} s")


def test_power_control_over_qmp(pe, workdir, start_vm) -> None:
    vm = start_vm(direct(pe, run_param("echo waiting; sleep 600"), no_reboot=False))
    vm.expect(r"^waiting", 120)
    assert vm.qmp("query-status")["status"] == "running"
    vm.qmp("stop")
    assert vm.qmp("query-status")["status"] == "paused"
    vm.qmp("cont")
    assert vm.qmp("query-status")["status"] == "running"
    vm.qmp("system_reset")
    vm.expect(r"init: peagent PE", 120)  # the machine booted again
    vm.expect(r"^waiting", 120)
    vm.qmp("quit")
    assert vm.wait_exit(30) == 0
