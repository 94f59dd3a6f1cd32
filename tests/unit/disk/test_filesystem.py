from __future__ import annotations

from collections.abc import Sequence

import pytest

from peagent.disk.filesystem import check_tools, make_filesystem, make_filesystems, mkfs_command
from peagent.disk.layout import parse_layout, plan_layout
from peagent.disk.partition import partition_path
from peagent.disk.tools import NOT_INSTALLED, ToolResult
from peagent.errors import FilesystemError
from peagent.inventory import Disk


class Recorder:
    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.returncode = returncode
        self.stderr = stderr

    def __call__(self, argv: Sequence[str], *, timeout: float | None = None) -> ToolResult:
        self.calls.append(list(argv))
        return ToolResult(tuple(argv), self.returncode, "", self.stderr)


@pytest.mark.parametrize(("fs", "label", "argv"), [
    ("vfat", "ESP", ["mkfs.vfat", "-F", "32", "-n", "ESP", "/dev/sda1"]),
    ("vfat", None, ["mkfs.vfat", "-F", "32", "/dev/sda1"]),
    ("ext4", "root", ["mkfs.ext4", "-F", "-q", "-L", "root", "/dev/sda1"]),
    ("xfs", "data", ["mkfs.xfs", "-f", "-q", "-L", "data", "/dev/sda1"]),
    ("swap", "swap", ["mkswap", "-L", "swap", "/dev/sda1"]),
    ("ntfs", "Windows", ["mkfs.ntfs", "--fast", "--quiet", "-L", "Windows", "/dev/sda1"]),
])
def test_mkfs_commands(fs, label, argv) -> None:
    assert mkfs_command("/dev/sda1", fs, label) == argv
    run = Recorder()
    make_filesystem("/dev/sda1", fs, label, runner=run)
    assert run.calls == [argv]


def test_none_makes_nothing_and_unknown_is_refused() -> None:
    run = Recorder()
    make_filesystem("/dev/sda1", "none", runner=run)
    assert run.calls == []
    with pytest.raises(FilesystemError, match=r"cannot make a 'btrfs' filesystem: peagent makes vfat, ext4, "
                                              r"xfs, swap, ntfs \(or none\)"):
        make_filesystem("/dev/sda1", "btrfs", runner=run)


def test_missing_and_failing_tools_are_named() -> None:
    with pytest.raises(FilesystemError) as info:
        make_filesystem("/dev/sda3", "xfs", "x", runner=Recorder(NOT_INSTALLED))
    assert str(info.value) == ("cannot make xfs on /dev/sda3: mkfs.xfs is not installed in this PE (Debian "
                               "package xfsprogs)")
    assert info.value.code == "device.filesystem" and info.value.exit_status == 7
    with pytest.raises(FilesystemError) as info:
        make_filesystem("/dev/sda3", "ext4", None, runner=Recorder(1, "mke2fs: Device size reported to be zero.\n"))
    assert str(info.value) == ("making ext4 on /dev/sda3 failed: mkfs.ext4 -F -q /dev/sda3 failed (status 1): "
                               "mke2fs: Device size reported to be zero.")


def test_check_tools_lists_what_the_pe_lacks(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    check_tools(["none"])
    with pytest.raises(FilesystemError) as info:
        check_tools(["vfat", "ntfs", "vfat", "none"])
    assert str(info.value) == (
        "this PE lacks mkfs.vfat for vfat (Debian package dosfstools), mkfs.ntfs for ntfs (Debian package "
        "ntfs-3g): add the package to buildroot/pe-packages.list, or ask the layout for another filesystem")


def test_partition_paths() -> None:
    assert partition_path("/dev/sda", 3) == "/dev/sda3"
    assert partition_path("/dev/nvme0n1", 1) == "/dev/nvme0n1p1"
    assert partition_path("/dev/loop7", 2) == "/dev/loop7p2"
    assert partition_path("/dev/mmcblk0", 1) == "/dev/mmcblk0p1"


def test_make_filesystems_formats_each_new_partition() -> None:
    spec = parse_layout({"table": "gpt", "create": [
        {"role": "esp", "size": "100MiB", "label": "ESP"}, {"role": "msr", "size": "16MiB"},
        {"role": "linux-root", "size": "fill", "fs": "ext4"}]})
    plan = plan_layout(spec, Disk(name="vda", path="/dev/vda", size=1 << 30))
    run = Recorder()
    make_filesystems(plan, "/dev/vda", runner=run)
    assert run.calls == [["mkfs.vfat", "-F", "32", "-n", "ESP", "/dev/vda1"], ["mkfs.ext4", "-F", "-q", "/dev/vda3"]]
