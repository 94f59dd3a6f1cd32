"""Linux injection into a tree: where modules and firmware go, depmod, and the initramfs for storage drivers."""

from __future__ import annotations

from pathlib import Path

import pytest

from peagent.disk.tools import ToolResult
from peagent.drivers.inject_linux import FirmwareFile, ModuleFile, inject_linux
from peagent.errors import DeviceError

RELEASE = "6.1.0-56-amd64"


class Recorder:
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv, *, timeout=None) -> ToolResult:
        self.calls.append(list(argv))
        status = 1 if self.fail and self.fail in argv else 0
        return ToolResult(tuple(argv), status, "", "boom" if status else "")


def new_os(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr/lib/modules" / RELEASE / "kernel").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")  # merged /usr, as Debian has it
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/update-initramfs").write_text("#!/bin/sh\n")
    return root


def package(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    (pkg / "firmware/intel").mkdir(parents=True)
    (pkg / "e1000.ko").write_bytes(b"\x7fELF module")
    (pkg / "nvme-x.ko.xz").write_bytes(b"\xfd7zXZ module")
    (pkg / "firmware/intel/fw.bin").write_bytes(b"firmware")
    return pkg


def test_modules_go_to_updates_and_depmod_runs_for_their_release(tmp_path: Path) -> None:
    root, pkg = new_os(tmp_path), package(tmp_path)
    runner = Recorder()
    report = inject_linux(root, [ModuleFile(pkg / "e1000.ko", "e1000", RELEASE),
                                 ModuleFile(pkg / "e1000.ko", "e1000", "5.10.0-20-amd64")],
                          [FirmwareFile(pkg / "firmware/intel/fw.bin", "intel/fw.bin")], runner=runner)
    assert (root / f"usr/lib/modules/{RELEASE}/updates/peagent/e1000.ko").read_bytes() == b"\x7fELF module"
    assert (root / "usr/lib/firmware/intel/fw.bin").read_bytes() == b"firmware"
    assert runner.calls == [["depmod", "-b", str(root), RELEASE]]
    assert report == [
        f"module e1000 -> /lib/modules/{RELEASE}/updates/peagent/e1000.ko",
        f"module e1000: built for 5.10.0-20-amd64, the image has {RELEASE}: not injected",
        "firmware -> /lib/firmware/intel/fw.bin",
        f"depmod {RELEASE}: the new OS's module index knows e1000",
    ]


def test_a_boot_critical_module_is_added_to_the_initramfs_rebuilt_in_a_chroot(tmp_path: Path) -> None:
    root, pkg = new_os(tmp_path), package(tmp_path)
    (root / "etc/initramfs-tools").mkdir(parents=True)
    (root / "etc/initramfs-tools/modules").write_text("# modules\nvirtio_blk")
    runner = Recorder()
    report = inject_linux(root, [ModuleFile(pkg / "nvme-x.ko.xz", "nvme_x", RELEASE, boot_critical=True)], [],
                          runner=runner)
    assert (root / "etc/initramfs-tools/modules").read_text() == "# modules\nvirtio_blk\nnvme_x\n"
    binds = [c for c in runner.calls if c[:2] == ["mount", "--bind"]]
    assert [c[2] for c in binds] == ["/dev", "/proc", "/sys", "/run"]
    assert ["chroot", str(root), "env", "TMPDIR=/run", "update-initramfs", "-u", "-k", RELEASE] in runner.calls
    assert [c[-1] for c in runner.calls if c[0] == "umount"] == [str(root / n) for n in ("run", "sys", "proc", "dev")]
    assert report[-1] == f"initramfs {RELEASE}: rebuilt in a chroot with nvme_x (update-initramfs)"


def test_firmware_outside_lib_firmware_is_refused_and_failures_are_errors(tmp_path: Path) -> None:
    root, pkg = new_os(tmp_path), package(tmp_path)
    report = inject_linux(root, [], [FirmwareFile(pkg / "firmware/intel/fw.bin", "../../etc/passwd")],
                          runner=Recorder())
    assert report == ["firmware ../../etc/passwd: not a relative path under lib/firmware: skipped"]
    assert not (root / "etc/passwd").exists()
    with pytest.raises(DeviceError, match=r"depmod for 6\.1\.0-56-amd64 in the new OS failed"):
        inject_linux(root, [ModuleFile(pkg / "e1000.ko", "e1000", RELEASE)], [], runner=Recorder(fail="depmod"))
