"""Safe target selection and partitioning in the PE, on disks of every bus: the hints choose the
right disk, the boot USB stick is never chosen, ambiguity is refused, a disk with data is
refused unless the task allows it, and a partition layout comes out as planned."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from tests.support.dp import DPProcess
from tests.vm.pe import IMAGE_SIZE, blank_disk, direct, exit_status, make_dp, usb_stick_with_params
from tests.vm.qemu import Drive, Machine

GIB = 1 << 30


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def four_disks(workdir: Path) -> list[Drive]:
    return [Drive(blank_disk(workdir / "virtio.img", 1 * GIB), "virtio", serial="VIRTIO-1G"),
            Drive(blank_disk(workdir / "nvme.img", 2 * GIB), "nvme", serial="NVME-2G"),
            Drive(blank_disk(workdir / "sata.img", 3 * GIB), "sata", serial="SATA-3G")]


def test_booted_from_usb_hints_with_operators_pick_the_nvme_disk(pe, workdir, netns, start_vm) -> None:
    root, image = make_dp(workdir, {"target": {"hints": {"size": ">= 2", "model": "<in> nvme"}}})
    stick = usb_stick_with_params(pe, workdir, "peagent.dp=http://10.0.2.2:8080/")
    before = digest(stick)
    disks = four_disks(workdir)
    with DPProcess(root, netns.prefix()):
        vm = start_vm(Machine(firmware="uefi", drives=[Drive(stick, "usb", serial="PESTICK", bootindex=0),
                                                       *disks]))
        vm.expect(r"plan: target: /dev/nvme0n1 \(2\.1 GB nvme, QEMU NVMe Ctrl, serial NVME-2G\)", 240)
        vm.expect(r"plan:   not /dev/sd[ab]: the PE's boot medium", 30)
        assert exit_status(vm) == 0
    assert disks[1].path.read_bytes()[:IMAGE_SIZE] == image
    for untouched in (disks[0], disks[2]):
        assert digest(untouched.path) == digest_of_zeros(untouched)
    assert digest(stick) == before


def digest_of_zeros(drive: Drive) -> str:
    h = hashlib.sha256()
    size = drive.path.stat().st_size
    block = bytes(1 << 20)
    for _ in range(size >> 20):
        h.update(block)
    return h.hexdigest()


def test_ambiguity_is_refused_and_lists_the_candidates_but_never_the_stick(pe, workdir, netns, start_vm) -> None:
    root, _ = make_dp(workdir, {"target": {"hints": {"rotational": True}}})
    stick = usb_stick_with_params(pe, workdir, "peagent.dp=http://10.0.2.2:8080/")
    disks = four_disks(workdir)
    with DPProcess(root, netns.prefix()):
        vm = start_vm(Machine(firmware="bios", drives=[Drive(stick, "usb", serial="PESTICK", bootindex=0),
                                                       *disks]))
        assert exit_status(vm, 240) == 3
    line = next(x for x in vm.console.splitlines() if "error [target.refused]" in x)
    assert "2 disks are eligible (rotational true), refusing to guess:" in line
    assert "serial VIRTIO-1G" in line and "serial SATA-3G" in line
    assert "PESTICK" not in line and "NVME-2G" not in line
    assert all(digest(d.path) == digest_of_zeros(d) for d in disks)


def test_a_disk_with_data_is_refused_unless_the_task_allows_it(pe, workdir, netns, start_vm) -> None:
    data = blank_disk(workdir / "data.img", 1 * GIB)
    subprocess.run(["sgdisk", "-n", "1:2048:+100M", "-t", "1:8300", str(data)], check=True, capture_output=True)
    subprocess.run(["mkfs.ext4", "-q", "-L", "USERDATA", "-E", "offset=1048576", str(data), "100M"], check=True)
    before = digest(data)
    drive = Drive(data, "sata", serial="DATA-DISK")
    root, image = make_dp(workdir, {"target": {"hints": {"serial": "DATA-DISK"}}})
    with DPProcess(root, netns.prefix()) as dp:
        vm = start_vm(direct(pe, f"peagent.dp={dp.guest_url}", [drive]), name="refused")
        assert exit_status(vm) == 3
        vm.expect(r"power: off", 30)
        assert ("holds data this deploy would destroy (a gpt partition table, ext4 on partition 1); "
                "set target.allow_overwrite to true to overwrite it") in vm.console
        assert digest(data) == before
        task = json.loads((root / "tasks/default.json").read_text())
        task["target"]["allow_overwrite"] = True
        (root / "tasks/default.json").write_text(json.dumps(task))
        vm = start_vm(direct(pe, f"peagent.dp={dp.guest_url}", [drive]), name="allowed")
        vm.expect(r"overwrites \(allowed by the task\): a gpt partition table, ext4 on partition 1", 240)
        assert exit_status(vm) == 0
    assert data.read_bytes()[:IMAGE_SIZE] == image


def test_a_partition_layout_is_made_as_planned(pe, workdir, netns, start_vm) -> None:
    layout = {"table": "gpt", "create": [
        {"role": "esp", "size": "100MiB", "label": "ESP"},
        {"role": "linux-root", "size": "fill", "fs": "ext4", "label": "root", "name": "root"},
        {"role": "swap", "size": "256MiB", "label": "swap"}]}
    root, _ = make_dp(workdir, raw_task=json.dumps({"version": 1, "after": "poweroff",
                                                     "target": {"partitions": layout}}))
    disk = blank_disk(workdir / "nvme.img", 2 * GIB)
    with DPProcess(root, netns.prefix()) as dp:
        vm = start_vm(direct(pe, f"peagent.dp={dp.guest_url}", [Drive(disk, "nvme", serial="NVME-LAYOUT")]))
        vm.expect(r"plan:   \d\. partition /dev/nvme0n1: create 1: esp 100 MiB vfat 'ESP' at 1 MiB", 120)
        assert exit_status(vm) == 0
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]
    parts = [(p["start"] * 512 >> 20, p["size"] * 512 >> 20, p["type"].lower(), p.get("name")) for p in table["partitions"]]
    assert parts == [
        (1, 100, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", None),
        (101, 2047 - 101 - 256, "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "root"),
        (2047 - 256, 256, "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", None),
    ]
    labels = []
    for p in table["partitions"]:
        probe = subprocess.run(["blkid", "-p", "-O", str(p["start"] * 512), "-S", str(p["size"] * 512),
                                "-o", "export", str(disk)], capture_output=True, text=True).stdout
        fields = dict(line.split("=", 1) for line in probe.splitlines() if "=" in line)
        labels.append((fields.get("TYPE"), fields.get("LABEL")))
    assert labels == [("vfat", "ESP"), ("ext4", "root"), ("swap", "swap")]


def test_a_task_erases_securely_then_partitions(pe, workdir, netns, start_vm) -> None:
    disk = workdir / "nvme.img"
    with disk.open("wb") as f:  # an old OS: a partition table, a filesystem, data everywhere
        for _ in range(512):
            f.write((b"old data " * 116509)[:1 << 20])
    subprocess.run(["sgdisk", "-n", "1:2048:+200M", "-t", "1:8300", str(disk)], check=True, capture_output=True)
    subprocess.run(["mkfs.ext4", "-q", "-E", "offset=1048576", str(disk), "200M"], check=True)
    layout = {"table": "gpt", "create": [{"role": "linux-data", "size": "fill", "fs": "ext4", "label": "fresh"}]}
    task = {"version": 1, "after": "poweroff",
            "target": {"erase": "secure", "allow_overwrite": True, "partitions": layout}}
    root, _ = make_dp(workdir, raw_task=json.dumps(task))
    with DPProcess(root, netns.prefix()) as dp:
        vm = start_vm(direct(pe, f"peagent.dp={dp.guest_url}", [Drive(disk, "nvme", serial="NVME-OLD")]))
        vm.expect(r"plan: overwrites \(allowed by the task\): a gpt partition table, ext4 on partition 1\n", 120)
        vm.expect(r"erase: /dev/nvme0n1: secure\n", 60)
        assert exit_status(vm) == 0
    assert b"old data" not in disk.read_bytes()
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]
    (part,) = table["partitions"]
    assert part["start"] * 512 == 1 << 20
    probe = subprocess.run(["blkid", "-p", "-O", str(part["start"] * 512), "-o", "export", str(disk)],
                           capture_output=True, text=True).stdout
    assert "TYPE=ext4" in probe and "LABEL=fresh" in probe
