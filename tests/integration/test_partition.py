"""Partitioning real block devices (loop devices) from layouts, checked with sfdisk and blkid.

Each test plans from the device as sfdisk and blkid see it (the inventory leaves loop devices out),
applies the plan with pyparted, makes the filesystems, and then compares what is on the device,
read back by other tools, with the plan: types, names, flags, sizes, alignment, labels; and, when
partitions are kept, their bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from peagent.disk.filesystem import make_filesystems
from peagent.disk.layout import ROLES, LayoutPlan, MiB, parse_layout, plan_layout
from peagent.disk.partition import apply_layout, partition_path
from peagent.errors import FilesystemError, LayoutError, PartitionError
from peagent.inventory import Disk, Partition
from tests.support.blockdev import inspect, run, table

pytestmark = pytest.mark.root


def deploy(layout: dict, device: str) -> LayoutPlan:
    plan = plan_layout(parse_layout(layout), inspect(device))
    apply_layout(plan, device)
    make_filesystems(plan, device)
    return plan


def blkid(node: str) -> dict[str, str]:
    out = run("blkid", "-p", "-o", "export", node)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def sha256_of(device: str, start: int = 0, size: int | None = None) -> str:
    digest = hashlib.sha256()
    with open(device, "rb") as f:
        f.seek(start)
        left = size if size is not None else os.fstat(f.fileno()).st_size or 1 << 62
        while left > 0:
            chunk = f.read(min(left, 4 * MiB))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def check_table_is_the_plan(plan: LayoutPlan, device: str) -> dict:
    t = table(device)
    entries = {int(re.search(r"(\d+)$", p["node"]).group(1)): p for p in t["partitions"]}  # type: ignore[union-attr]
    assert t["label"] == {"gpt": "gpt", "msdos": "dos"}[plan.table]
    assert sorted(entries) == sorted([c.number for c in plan.created] + [p.number for p in plan.kept])
    for c in plan.created:
        e = entries[c.number]
        assert (e["start"], e["size"]) == (c.first_sector, c.sectors), c
        assert (e["start"] * 512) % MiB == 0 and (e["size"] * 512) % MiB == 0
        if plan.table == "gpt":
            assert e["type"].lower() == c.spec.type_id
            assert e.get("name") == c.spec.name
        else:
            assert int(e["type"], 16) == int(c.spec.type_id, 16)
            assert e.get("bootable", False) == ("boot" in c.spec.flags)
        node = partition_path(device, c.number)
        info = blkid(node) if c.spec.fs != "none" else {}
        assert info.get("TYPE") == {"none": None, "vfat": "vfat", "ext4": "ext4", "xfs": "xfs",
                                    "swap": "swap", "ntfs": "ntfs"}[c.spec.fs]
        assert info.get("LABEL") == c.spec.label
        if c.spec.fs == "vfat":
            assert info["VERSION"] == "FAT32"
    return entries


def test_a_gpt_layout_is_written_exactly_as_planned(loop) -> None:
    device = loop(256 * MiB)
    plan = deploy({"table": "gpt", "create": [
        {"role": "esp", "size": "40MiB", "label": "ESP"},
        {"role": "msr", "size": "16MiB", "name": "Microsoft reserved partition"},
        {"role": "linux-root", "size": "fill", "fs": "ext4", "label": "root", "name": "root"},
        {"role": "swap", "size": "32MiB", "label": "swap"},
        {"type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "size": "10%", "flags": ["hidden", "legacy_boot"],
         "name": "extra"},
    ]}, device)
    assert plan.render() == [
        f"new gpt partition table on {device} (256 MiB)",
        "create 1: esp 40 MiB vfat 'ESP' at 1 MiB",
        "create 2: msr 16 MiB name 'Microsoft reserved partition' at 41 MiB",
        "create 3: linux-root 141 MiB ext4 'root' name 'root' at 57 MiB",
        "create 4: swap 32 MiB swap 'swap' at 198 MiB",
        "create 5: type 0fc63daf-8483-4772-8e79-3d69d8477de4 25 MiB name 'extra' flags hidden,legacy_boot "
        "at 230 MiB",
    ]
    entries = check_table_is_the_plan(plan, device)
    assert entries[5]["attrs"] == "RequiredPartition LegacyBIOSBootable"
    assert "attrs" not in entries[1]
    assert entries[3]["type"].lower() == ROLES["linux-root"].gpt
    # The backup table sits in the last sectors; the last MiB is left to it.
    t = table(device)
    assert t["lastlba"] == 256 * MiB // 512 - 34
    assert plan.created[-1].end == 255 * MiB


def test_every_filesystem_gets_its_label(loop) -> None:
    device = loop(1024 * MiB)
    plan = deploy({"table": "gpt", "create": [
        {"role": "esp", "size": "64MiB", "label": "EFI"},
        {"role": "windows-data", "size": "64MiB", "fs": "ntfs", "label": "Windows"},
        {"role": "linux-data", "size": "300MiB", "fs": "xfs", "label": "data"},
        {"role": "home", "size": "64MiB", "fs": "ext4", "label": "home"},
        {"role": "swap", "size": "16MiB", "label": "swap0"},
        {"role": "windows-recovery", "size": "fill"},
    ]}, device)
    check_table_is_the_plan(plan, device)


def test_an_msdos_layout_is_written_exactly_as_planned(loop) -> None:
    device = loop(128 * MiB)
    plan = deploy({"table": "msdos", "create": [
        {"role": "esp", "size": "40MiB", "label": "ESP", "flags": ["boot"]},
        {"type": "0x0c", "size": "34MiB", "fs": "vfat", "label": "DATA"},
        {"role": "linux-root", "size": "fill", "fs": "ext4", "label": "root"},
        {"role": "swap", "size": "8MiB"},
    ]}, device)
    entries = check_table_is_the_plan(plan, device)
    assert [entries[n]["type"] for n in (1, 2, 3, 4)] == ["ef", "c", "83", "82"]
    assert plan.created[2].end == 120 * MiB  # fill stops where swap starts, at the end of the disk


@pytest.mark.parametrize("kind", ["gpt", "msdos"])
def test_a_kept_partition_keeps_its_bytes_and_its_files(loop, tmp_path, kind) -> None:
    device = loop(128 * MiB)
    deploy({"table": kind, "create": [
        {"role": "esp", "size": "40MiB", "label": "OLDESP"},
        {"role": "linux-data", "size": "32MiB", "fs": "ext4", "label": "OLDROOT"},
        {"role": "linux-data", "size": "fill", "fs": "ext4", "label": "DATA"},
    ]}, device)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    data = partition_path(device, 3)
    run("mount", data, str(mnt))
    try:
        (mnt / "keep-me.txt").write_text("still here\n")
    finally:
        run("umount", str(mnt))
    before = inspect(device)
    kept = before.partitions[2]
    entry_before = table(device)["partitions"][2]
    bytes_before = sha256_of(device, kept.start, kept.size)

    plan = deploy({"table": kind, "keep": [{"label": "DATA"}], "create": [
        {"role": "swap", "size": "8MiB", "label": "newswap"},
        {"role": "esp", "size": "fill", "label": "NEWESP"},
    ]}, device)
    assert [p.number for p in plan.kept] == [3] and [p.number for p in plan.deleted] == [1, 2]
    assert [(c.number, c.start, c.size) for c in plan.created] == [(1, MiB, 8 * MiB), (2, 9 * MiB, 64 * MiB)]

    check_table_is_the_plan(plan, device)
    assert table(device)["partitions"][2] == entry_before  # same entry: start, size, type, uuid, name
    assert sha256_of(device, kept.start, kept.size) == bytes_before
    assert blkid(data)["LABEL"] == "DATA"
    run("mount", "-o", "ro", data, str(mnt))
    try:
        assert (mnt / "keep-me.txt").read_text() == "still here\n"
    finally:
        run("umount", str(mnt))


def test_bad_layouts_are_refused_before_anything_is_written(loop, tmp_path, monkeypatch) -> None:
    device = loop(64 * MiB)
    deploy({"table": "gpt", "create": [
        {"role": "linux-data", "size": "8MiB", "fs": "ext4", "label": "ONE"},
        {"role": "linux-data", "size": "8MiB", "fs": "ext4", "label": "MID"},
        {"role": "linux-data", "size": "fill", "fs": "ext4", "label": "DATA"},
    ]}, device)
    untouched = sha256_of(device)
    disk = inspect(device)

    with pytest.raises(LayoutError, match="the layout is larger than"):
        plan_layout(parse_layout({"table": "gpt", "create": [{"role": "esp", "size": "1GiB"}]}), disk)
    # Keeping MID (9 to 17 MiB) leaves gaps of 8 and 46 MiB: 4 + 44 + 5 MiB fit in neither order.
    with pytest.raises(LayoutError, match=r"create\[2\] \(swap, 5 MiB \(5242880 bytes\)\) fits in no free gap"):
        plan_layout(parse_layout({"table": "gpt", "keep": [{"label": "MID"}], "create": [
            {"role": "linux-data", "size": "4MiB"}, {"role": "linux-data", "size": "44MiB"},
            {"role": "swap", "size": "5MiB"}]}), disk)

    # A plan made for another disk is refused by apply_layout.
    other = loop(128 * MiB)
    plan = plan_layout(parse_layout({"table": "gpt", "create": [{"role": "esp", "size": "40MiB"}]}),
                       inspect(other))
    with pytest.raises(PartitionError, match="is not the disk the layout was planned for"):
        apply_layout(plan, device)

    # The disk changed since the plan: partition 1 is no longer where the plan saw it.
    moved = Disk(**{**disk.__dict__, "partitions": (
        Partition(**{**disk.partitions[0].__dict__, "start": 2 * MiB}), *disk.partitions[1:])})
    plan = plan_layout(parse_layout({"table": "gpt", "keep": [{"label": "DATA"}],
                                     "create": [{"role": "swap", "size": "4MiB"}]}), moved)
    with pytest.raises(PartitionError, match=r"changed since the layout was planned \(partitions 1 differ\)"):
        apply_layout(plan, device)

    # A filesystem whose tool this system lacks: refused before the table is written.
    plan = plan_layout(parse_layout({"table": "gpt", "create": [
        {"role": "windows-data", "size": "8MiB", "fs": "ntfs"}]}), disk)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sfdisk", "wipefs", "udevadm"):
        (bin_dir / tool).symlink_to(next(p for p in ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
                                         if Path(p, tool).exists()) + "/" + tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(FilesystemError, match=r"this PE lacks mkfs.ntfs for ntfs \(Debian package ntfs-3g\)"):
        apply_layout(plan, device)
    monkeypatch.undo()

    assert sha256_of(device) == untouched


def test_a_kept_partition_past_the_end_of_a_shrunk_disk_is_refused(loop, tmp_path) -> None:
    backing = tmp_path / "shrinking.img"
    device = loop(64 * MiB, backing)
    deploy({"table": "msdos", "create": [
        {"role": "linux-data", "size": "8MiB"},
        {"role": "linux-data", "size": "fill", "label": "DATA", "fs": "ext4"}]}, device)
    subprocess.run(["losetup", "-d", device], check=True)
    with backing.open("r+b") as f:  # the disk's image goes onto a smaller disk
        f.truncate(48 * MiB)
    device = loop(48 * MiB, backing)
    untouched = sha256_of(device)
    layout = parse_layout({"table": "msdos", "keep": [{"number": 2}], "create": [{"role": "swap", "size": "4MiB"}]})

    # As the table says: partition 2 runs 16 MiB past the end of the disk.
    disk = inspect(device)
    with pytest.raises(LayoutError, match=r"kept partition 2: .* overlaps the MBR, or lies past what msdos can "
                                          r"address or the end of the disk"):
        plan_layout(layout, disk)
    # As the kernel shows it (cut at the end of the disk): the plan passes, libparted refuses.
    p2 = disk.partitions[1]
    cut = Disk(**{**disk.__dict__, "partitions": (
        disk.partitions[0], Partition(**{**p2.__dict__, "size": disk.size - p2.start}))})
    plan = plan_layout(layout, cut)
    with pytest.raises(PartitionError, match="Can't have a partition outside the disk"):
        apply_layout(plan, device)
    assert sha256_of(device) == untouched


def test_a_fresh_table_leaves_nothing_of_the_old_one(loop) -> None:
    device = loop(128 * MiB)
    deploy({"table": "gpt", "create": [
        {"role": "linux-data", "size": "40MiB", "fs": "ext4", "label": "OLD"},
        {"role": "linux-data", "size": "fill", "fs": "ext4", "label": "OLDER"}]}, device)
    plan = deploy({"table": "msdos", "create": [
        {"role": "linux-data", "size": "40MiB"}, {"role": "swap", "size": "fill"}]}, device)
    check_table_is_the_plan(plan, device)
    # No GPT left (libparted clobbers it, backup header included), and no old ext4 in partition 1.
    assert blkid(device) == {"DEVNAME": device, "PTUUID": blkid(device)["PTUUID"], "PTTYPE": "dos"}
    found = blkid(partition_path(device, 1))
    assert "TYPE" not in found and "LABEL" not in found and found["PART_ENTRY_TYPE"] == "0x83"
