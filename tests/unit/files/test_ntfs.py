"""peagent.files.ntfs without a volume: mount options, ntfs-3g's exit statuses, mountinfo, name clashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from peagent.disk.tools import ToolResult
from peagent.errors import FilesystemError
from peagent.files import ntfs
from tests.unit.disk.fakes import FakeRunner, fail, ok

# /proc/self/mountinfo with an ntfs-3g mount (fuseblk) of /dev/loop2 on a path with a space.
MOUNTINFO = """\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
43 27 7:2 / /mnt/old\\040windows rw,relatime - fuseblk /dev/loop2 rw,user_id=0,group_id=0,allow_other,blksize=4096
44 27 7:20 / /mnt/other rw,relatime - ext4 /dev/loop20 rw
"""


def test_mount_command_keeps_metadata_and_refuses_windows_invalid_names():
    assert ntfs.mount_command("/dev/sda3", Path("/mnt/w")) == [
        "ntfs-3g", "-o", "rw,streams_interface=xattr,windows_names", "/dev/sda3", "/mnt/w"]
    assert ntfs.mount_options(readonly=True, remove_hiberfile=True) == \
        "ro,streams_interface=xattr,windows_names,remove_hiberfile"


def test_mountpoints_of_matches_the_device_number_and_unescapes():
    assert ntfs.mountpoints_of(7, 2, MOUNTINFO) == ["/mnt/old windows"]
    assert ntfs.mountpoints_of(7, 3, MOUNTINFO) == []


def test_clashes_compare_names_as_windows_does():
    assert ntfs.clashes(["users", "kept.txt", "Windows"], ["Users", "Program Files", "WINDOWS"]) == ["Windows", "users"]
    assert ntfs.clashes(["peagent.kept"], ["Users", "Windows"]) == []


def test_check_fresh_names_the_clashes():
    runner = FakeRunner({("ntfsls",): ok("Users\nWindows\npagefile.sys\npeagent.kept\n")})
    with pytest.raises(FilesystemError, match=r"^the NTFS volume /dev/sda3 already holds Users, Windows, which the "
                                              r"image also has at its root: wimlib's NTFS mode only creates names"):
        ntfs.check_fresh("/dev/sda3", ["Users", "Windows", "Program Files"], runner)
    ntfs.check_fresh("/dev/sda3", ["Program Files"], runner)
    assert runner.commands("ntfsls") == [("ntfsls", "--all", "/dev/sda3")] * 2


def test_probe_explains_ntfs3gs_exit_statuses():
    runner = FakeRunner({("ntfs-3g.probe",): fail(14, "Windows is hibernated, refused to mount.")})
    with pytest.raises(FilesystemError, match=r"^the NTFS volume cannot be written: /dev/sda3: Windows is hibernated "
                                              r"on it \(or shut down with Fast Startup\): boot Windows and shut it down "
                                              r"fully"):
        ntfs.probe("/dev/sda3", runner)
    ntfs.probe("/dev/sda3", FakeRunner({("ntfs-3g.probe",): ok()}))
    with pytest.raises(FilesystemError, match=r"ntfs-3g.probe is not installed in this PE \(Debian package ntfs-3g\)"):
        ntfs.probe("/dev/sda3", FakeRunner())


def test_mount_failures_name_the_cause(monkeypatch, tmp_path):
    monkeypatch.setattr(ntfs, "check_unused", lambda device: None)
    with pytest.raises(FilesystemError, match=r"/dev/sda3: it was not cleanly unmounted: boot Windows and shut it down"):
        ntfs.mount("/dev/sda3", tmp_path, runner=FakeRunner({("ntfs-3g",): fail(15, "unclean")}))
    with pytest.raises(FilesystemError, match=r"ntfs-3g is not installed in this PE \(Debian package ntfs-3g\)"):
        ntfs.mount("/dev/sda3", tmp_path, runner=FakeRunner())


def test_unmount_waits_for_the_driver_to_let_go(monkeypatch, tmp_path):
    answers = iter([True, True, False])
    monkeypatch.setattr(ntfs, "in_use", lambda device: next(answers))
    runner = FakeRunner({("umount",): ok()})
    ntfs.unmount(tmp_path, "/dev/sda3", runner=runner)
    assert runner.commands("umount") == [("umount", str(tmp_path))]
    assert next(answers, None) is None  # polled until free
    monkeypatch.setattr(ntfs, "in_use", lambda device: True)
    with pytest.raises(FilesystemError, match=r"/dev/sda3 is still open 0 s after unmounting"):
        ntfs.unmount(tmp_path, "/dev/sda3", runner=runner, settle=0.0)
    busy = FakeRunner({("umount",): ToolResult((), 32, "", "umount: target is busy.")})
    with pytest.raises(FilesystemError, match=r"cannot unmount .*: umount .* failed \(status 32\): umount: target is "
                                              r"busy.; close what uses it"):
        ntfs.unmount(tmp_path, "/dev/sda3", runner=busy)


def test_check_unused_refuses_what_is_not_a_block_device(tmp_path):
    with pytest.raises(FilesystemError, match=r"is not a block device: an NTFS volume is written on its partition"):
        ntfs.check_unused(str(tmp_path))
    with pytest.raises(FilesystemError, match=r"nowhere: No such file or directory"):
        ntfs.check_unused(str(tmp_path / "nowhere"))
