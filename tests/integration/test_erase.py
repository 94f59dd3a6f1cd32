"""Erasing real block devices (loop devices over sparse files on the real disk), checked by reading
them back with wipefs, blkid and plain reads.

The disks carry what an old OS leaves: a GPT with an ext4 filesystem, an LVM physical volume, a
bcache backing device and an MD RAID member, on partitions and on whole disks, over a non-zero
pattern. The LVM and bcache signatures come from their own tools (pvcreate, make-bcache). MD
superblocks are written byte by byte here (:func:`md_superblock`), because creating an array with
mdadm needs the kernel's md driver, which the machines these tests run on may lack; libblkid (and
so wipefs) recognises them by the same fields mdadm writes (magic, version, superblock offset).

Loop devices discard by punching holes in their backing file, so the discard mode is checked
end to end here, including that the backing file became sparse. The kernel of the test machine
may have no partition-table parsers at all; ``partx --update`` tells it about the partitions
explicitly, which works either way.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from peagent.disk.capabilities import EraseCaps, probe
from peagent.disk.erase import EraseSpec, check_erase, erase, partitions_of
from peagent.errors import EraseError, EraseUnsupportedError

pytestmark = pytest.mark.root

MIB = 1 << 20
PATTERN = bytes(range(1, 256)) * (MIB // 255) + b"\x01" * (MIB % 255)  # 1 MiB, never zero


def run(*argv: str, **kwargs) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, **kwargs).stdout


def caps_of(device: str) -> EraseCaps:
    return probe(device, f"/sys/class/block/{os.path.basename(device)}")


def fill(device: str) -> None:
    size = int(run("blockdev", "--getsize64", device))
    with open(device, "r+b") as f:
        for _ in range(size // MIB):
            f.write(PATTERN)
        os.fsync(f.fileno())


def sha256(device: str) -> str:
    with open(device, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def is_zero(device: str) -> bool:
    with open(device, "rb", buffering=0) as f:
        return all(chunk.count(0) == len(chunk) for chunk in iter(lambda: f.read(4 * MIB), b""))


def found_signatures(device: str) -> list[str]:
    """What blkid -p finds on the device ("" list when nothing), and wipefs's list."""
    probe_ = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", "-s", "PTTYPE", device],
                            capture_output=True, text=True)
    listed = run("wipefs", "--noheadings", "--output", "TYPE", device).split()
    return probe_.stdout.split() + listed


def md_superblock(device: str, version: str) -> None:
    """Write an MD superblock as mdadm would place it: 0.90 (64 KiB-aligned, 64 KiB before the end),
    1.0 (8 KiB before the 4 KiB-aligned end), 1.1 (at 0), 1.2 (at 4 KiB)."""
    size = int(run("blockdev", "--getsize64", device))
    sb = bytearray(4096)
    if version == "0.90":
        offset = (size & ~0xFFFF) - 0x10000
        struct.pack_into("<IIII", sb, 0, 0xA92B4EFC, 0, 90, 0)
        sb[20:24] = uuid.uuid4().bytes[:4]
    else:
        offset = {"1.0": (size & ~0xFFF) - 0x2000, "1.1": 0, "1.2": 0x1000}[version]
        struct.pack_into("<IIII", sb, 0, 0xA92B4EFC, 1, 0, 0)
        sb[16:32] = uuid.uuid4().bytes
        sb[32:44] = b"peagent:test"
        struct.pack_into("<Q", sb, 144, offset // 512)  # super_offset, in sectors
    with open(device, "r+b") as f:
        f.seek(offset)
        f.write(sb)
        os.fsync(f.fileno())


LVM_CONFIG = "devices {{ obtain_device_list_from_udev=0 filter=[\"a|^{dev}$|\",\"r|.*|\"] }} " \
             "activation {{ udev_sync=0 udev_rules=0 }}"


def pvcreate(device: str) -> None:
    run("pvcreate", "-ff", "-y", "--config", LVM_CONFIG.format(dev=device), device,
        env={**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"})


def gpt_with_signatures(device: str) -> list[str]:
    """A GPT with ext4, LVM, bcache and MD 1.2 partitions, over the pattern; returns the partitions."""
    fill(device)
    run("sgdisk", "--zap-all", device)
    run("sgdisk", "-n1:1M:+16M", "-n2:0:+16M", "-n3:0:+16M", "-n4:0:+12M", device)
    run("partx", "--update", device)
    parts = [f"{device}p{n}" for n in range(1, 5)]
    run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", parts[0])  # keep the pattern around it
    pvcreate(parts[1])
    run("make-bcache", "-B", parts[2])
    md_superblock(parts[3], "1.2")
    return parts


def test_probe_of_a_loop_device(loop):
    dev = loop(64 * MIB)
    caps = caps_of(dev)
    assert (caps.interface, caps.size, caps.discard, caps.discard_zeroes, caps.write_zeroes) == \
        ("loop", 64 * MIB, True, True, True)
    assert caps.secure_problem == f"{dev} is a loop device: it has no secure erase"


def test_metadata_erase_leaves_a_blank_disk_whose_old_partitions_come_back_empty(loop):
    dev = loop(64 * MIB)
    parts = gpt_with_signatures(dev)
    assert [found_signatures(p)[0] for p in parts] == ["ext4", "LVM2_member", "bcache", "linux_raid_member"]
    assert set(found_signatures(dev)) == {"gpt", "PMBR"}
    caps = caps_of(dev)
    seen: list[int] = []

    report = erase(dev, EraseSpec("metadata"), caps, seen.append)

    assert found_signatures(dev) == []
    assert partitions_of(Path(f"/sys/class/block/{os.path.basename(dev)}")) == []
    wiped = report.steps[0]
    for kind in ("ext4 on", "LVM2_member on", "bcache on", "linux_raid_member on", "gpt on", "PMBR on"):
        assert kind in wiped, wiped
    assert report.verified == (
        f"blkid -p and wipefs find no signature on {dev}",
        "the kernel lists no partition",
        "the 5 zeroed region(s) (14 MiB: MBR, both GPT headers and tables, superblocks at the ends) read back as "
        "zeroes",
    )
    assert sum(seen) == report.bytes == 14 * MIB
    with open(dev, "rb") as f:
        assert f.read(4 * MIB).count(0) == 4 * MIB
        f.seek(8 * MIB)  # the middle of the old ext4 partition: metadata mode leaves data alone
        assert f.read(MIB) == PATTERN
        f.seek(-4 * MIB, os.SEEK_END)
        assert f.read().count(0) == 4 * MIB
    # The same table written again must not bring any old superblock back with it.
    run("sgdisk", "-n1:1M:+16M", "-n2:0:+16M", "-n3:0:+16M", "-n4:0:+12M", dev)
    run("partx", "--update", dev)
    assert [found_signatures(p) for p in parts] == [[], [], [], []]


@pytest.mark.parametrize("signature", ["md 0.90", "md 1.0", "md 1.1", "md 1.2", "lvm", "bcache", "ext4"])
def test_metadata_erase_of_whole_disk_signatures(loop, signature):
    dev = loop(32 * MIB)
    fill(dev)
    if signature.startswith("md"):
        md_superblock(dev, signature.split()[1])
    elif signature == "lvm":
        pvcreate(dev)
    elif signature == "bcache":
        run("make-bcache", "-B", dev)
    else:
        run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", dev)
    expected = {"md": "linux_raid_member", "lvm": "LVM2_member"}.get(signature.split()[0], signature)
    assert found_signatures(dev)[:1] == [expected]
    erase(dev, EraseSpec("metadata"), caps_of(dev))
    assert found_signatures(dev) == []


def test_zero_erase_zeroes_every_byte(loop):
    dev = loop(64 * MIB)
    gpt_with_signatures(dev)
    seen: list[int] = []
    report = erase(dev, EraseSpec("zero"), caps_of(dev), seen.append)
    assert is_zero(dev)
    assert found_signatures(dev) == [] and partitions_of(Path(f"/sys/class/block/{os.path.basename(dev)}")) == []
    assert (report.method, report.bytes, sum(seen)) == ("BLKZEROOUT", 64 * MIB, 64 * MIB)
    assert report.verified[-1] == ("the samples (5.9 MiB: 64 blocks of 64 KiB spread over the disk, the first and "
                                   "last MiB) read as zeroes")


def test_discard_erase_punches_the_backing_file_and_reads_as_zeroes(loop, tmp_path):
    dev = loop(64 * MIB)
    gpt_with_signatures(dev)
    backing = tmp_path / "disk0.img"
    assert backing.stat().st_blocks * 512 >= 60 * MIB  # filled: allocated
    caps = caps_of(dev)
    assert caps.discard, f"{dev}: the backing file's filesystem cannot punch holes"
    report = erase(dev, EraseSpec("discard", samples=128), caps)
    assert is_zero(dev) and found_signatures(dev) == []
    # Only what the metadata erase zeroed after the discard may still be allocated: 14 MiB, the disk's
    # ends and both ends of the four partitions (the kernel still listed them then), and a few blocks.
    assert backing.stat().st_blocks * 512 <= 15 * MIB
    assert report.method == "BLKDISCARD"
    assert report.verified[-1].startswith("the samples (") and report.notes == ()


def test_unsupported_modes_are_refused_before_anything_is_written(loop):
    dev = loop(64 * MIB)
    gpt_with_signatures(dev)
    before = sha256(dev)
    caps = caps_of(dev)
    with pytest.raises(EraseUnsupportedError, match=r"secure: .* is a loop device: it has no secure erase"):
        erase(dev, EraseSpec("secure"), caps)
    with pytest.raises(EraseUnsupportedError, match=r"discard: .* does not support discard"):
        erase(dev, EraseSpec("discard"), replace(caps, discard=False, discard_max_bytes=0))
    with pytest.raises(EraseUnsupportedError):
        check_erase(EraseSpec("secure", "ata"), caps)
    assert sha256(dev) == before


def test_a_mounted_partition_is_refused_before_anything_is_written(loop, tmp_path):
    dev = loop(64 * MIB)
    parts = gpt_with_signatures(dev)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    run("mount", "-o", "ro", parts[0], str(mountpoint))
    try:
        before = sha256(dev)
        with pytest.raises(EraseError) as exc:
            erase(dev, EraseSpec("zero"), caps_of(dev))
        assert str(exc.value) == (f"{parts[0]} is in use (mounted, swap, or held by LVM, MD or dm-crypt): {dev} "
                                  "is not erased; unmount or stop what holds it")
        assert sha256(dev) == before
    finally:
        run("umount", str(mountpoint))
