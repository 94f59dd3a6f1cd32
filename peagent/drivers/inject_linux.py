"""Putting matched Linux driver packages into a freshly written Linux OS, offline, from the PE.

A Linux driver package is kernel modules (``.ko``, possibly compressed) and the firmware files
they load. Injection puts them where the new OS's own kernel looks first, and makes them known:

* modules go to ``lib/modules/<release>/updates/peagent/`` for the one release they were built
  for (their ``vermagic``); depmod searches ``updates`` before the kernel's own tree
  (depmod.d(5)), so an injected module wins over an older in-tree one of the same name. A module
  built for a release the image does not have is skipped and reported, never copied where it
  could not load;
* firmware goes to ``lib/firmware/`` keeping its relative path (what the module asks for);
* ``depmod -b ROOT RELEASE`` rebuilds the image's module index, so that udev loads the module
  by modalias at the first boot, the way it loads in-tree drivers;
* a boot-critical module (a storage controller's: the root filesystem is behind it) must be in
  the initramfs: it is listed in ``etc/initramfs-tools/modules`` (or a dracut drop-in) and the
  initramfs is rebuilt in a chroot of the new OS (``/dev``, ``/proc``, ``/sys`` and ``/run``
  bound in, as curtin does), for that kernel release only.

Every step returns report lines for the plan and status; nothing outside ``root`` is written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from peagent.disk.tools import Runner, run_tool
from peagent.errors import DeviceError
from peagent.state import rootfs

UPDATES = "updates/peagent"


@dataclass(frozen=True)
class ModuleFile:
    path: Path  # the fetched, verified file in the PE
    name: str  # the module's name (modinfo name=, else the file name without .ko*)
    release: str  # the kernel release it was built for (vermagic's first word)
    boot_critical: bool = False  # it drives a storage controller: needed in the initramfs


@dataclass(frozen=True)
class FirmwareFile:
    path: Path
    relative: str  # where under lib/firmware the module looks for it (intel/ibt-20-1-3.sfi)


def inject_linux(root: Path, modules: Sequence[ModuleFile], firmware: Sequence[FirmwareFile], *,
                 runner: Runner = run_tool) -> list[str]:
    """Install the modules and firmware into the OS at ``root``; its report lines."""
    releases = kernel_releases(root)
    report: list[str] = []
    installed: dict[str, list[ModuleFile]] = {}
    for module in modules:
        if module.release not in releases:
            report.append(f"module {module.name}: built for {module.release}, the image has "
                          f"{', '.join(sorted(releases)) or 'no kernel'}: not injected")
            continue
        _copy(module.path, root, f"lib/modules/{module.release}/{UPDATES}/{module.path.name}")
        installed.setdefault(module.release, []).append(module)
        report.append(f"module {module.name} -> /lib/modules/{module.release}/{UPDATES}/{module.path.name}")
    for fw in firmware:
        relative = Path(fw.relative)
        if relative.is_absolute() or ".." in relative.parts:
            report.append(f"firmware {fw.relative}: not a relative path under lib/firmware: skipped")
            continue
        _copy(fw.path, root, f"lib/firmware/{relative}")
        report.append(f"firmware -> /lib/firmware/{fw.relative}")
    for release, done in sorted(installed.items()):
        result = runner(["depmod", "-b", str(root), release], timeout=300)
        if not result.ok:
            raise DeviceError(f"depmod for {release} in the new OS failed: {result.why()}")
        report.append(f"depmod {release}: the new OS's module index knows {', '.join(m.name for m in done)}")
        critical = [m.name for m in done if m.boot_critical]
        if critical:
            report += _initramfs(root, release, critical, runner)
    return report


def kernel_releases(root: Path) -> set[str]:
    """The kernel releases the new OS has modules for (what a module's vermagic must name)."""
    return {name for name in rootfs.list_dir(root, "lib/modules")
            if rootfs.kind(root, f"lib/modules/{name}/modules.order") is not None
            or rootfs.kind(root, f"lib/modules/{name}/kernel") == "dir"}


def _copy(source: Path, root: Path, rel: str) -> None:
    # Into the new OS's tree, whose symlinks (lib -> usr/lib) are resolved inside it, never out of it.
    rootfs.write_file(root, rel, source.read_bytes(), 0o644)


def _initramfs(root: Path, release: str, names: list[str], runner: Runner) -> list[str]:
    """Add boot-critical modules to the image's initramfs generator and rebuild it for ``release``."""
    if any(rootfs.kind(root, p) for p in ("usr/sbin/update-initramfs", "sbin/update-initramfs")):
        have = (rootfs.read_text(root, "etc/initramfs-tools/modules") or "")
        missing = [n for n in names if n not in have.split()]
        text = have + ("" if not have or have.endswith("\n") else "\n") + "".join(f"{n}\n" for n in missing)
        rootfs.write_file(root, "etc/initramfs-tools/modules", text.encode(), 0o644)
        argv = ["update-initramfs", "-u", "-k", release]
    elif any(rootfs.kind(root, p) for p in ("usr/bin/dracut", "usr/sbin/dracut")):
        rootfs.write_file(root, "etc/dracut.conf.d/90-peagent.conf", f'add_drivers+=" {" ".join(names)} "\n'.encode())
        argv = ["dracut", "-f", "--no-hostonly", "--kver", release]  # not host-only: the PE is not the machine's OS
    else:
        return [f"initramfs: {', '.join(names)} is boot-critical, but the image has neither initramfs-tools nor "
                "dracut: not rebuilt (the module loads only once the root filesystem is reachable)"]
    with _chroot_mounts(root, runner):
        # The generator's work tree goes to /run (the PE's RAM): an image's root filesystem is often sized
        # to its content, with no room for an initramfs's uncompressed tree beside the new one (ENOSPC).
        result = runner(["chroot", str(root), "env", "TMPDIR=/run", *argv], timeout=1800)
    if not result.ok:
        raise DeviceError(f"rebuilding the new OS's initramfs for {release} failed: {result.why()}")
    return [f"initramfs {release}: rebuilt in a chroot with {', '.join(names)} ({argv[0]})"]


@contextlib.contextmanager
def _chroot_mounts(root: Path, runner: Runner) -> Iterator[None]:
    done: list[Path] = []
    try:
        for name in ("dev", "proc", "sys", "run"):
            where = root / name
            where.mkdir(exist_ok=True)
            result = runner(["mount", "--bind", f"/{name}", str(where)], timeout=60)
            if not result.ok:
                raise DeviceError(f"cannot bind /{name} into the new OS for its initramfs: {result.why()}")
            done.append(where)
        yield
    finally:
        for where in reversed(done):
            runner(["umount", "-l", str(where)], timeout=60)
