"""kexec: start the new Linux without going back through the firmware.

``kexec -l KERNEL --initrd=INITRD --command-line=...`` loads a kernel into memory; ``kexec -e``
jumps into it, as a reboot would but without the POST (minutes on big servers) and without the
firmware's boot order. The PE's PID 1 runs ``kexec -e`` once the agent has finished and unmounted
everything; this module only finds what to load in the new OS's mounted root and loads it (the
files are read at load time, so the root may be unmounted afterwards).

What to load, in a Debian-style root: the newest ``boot/vmlinuz-<version>`` that has a
``boot/initrd.img-<version>`` (versions compared naturally: 6.1.0-13 after 6.1.0-9), else the
``vmlinuz``/``initrd.img`` symlinks Debian keeps in / (or in /boot). Absolute symlinks are
resolved inside the root, never in the PE.

The kernel command line is what GRUB would give: the ``linux`` line of the first ``menuentry``
in boot/grub/grub.cfg (the one for this kernel if there is one), without its unexpanded GRUB
variables. Without a grub.cfg (an image whose grub.cfg is made on first boot), the line is built
as update-grub builds it: ``root=<the / device of etc/fstab> ro`` then GRUB_CMDLINE_LINUX and
GRUB_CMDLINE_LINUX_DEFAULT from etc/default/grub and etc/default/grub.d/*.cfg.
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from peagent.disk.tools import NOT_INSTALLED, Runner, run_tool
from peagent.errors import DeviceError

log = logging.getLogger(__name__)

_GRUB_VARS = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")
_SKIP_SUFFIXES = (".old", ".bak", ".dpkg-old", ".dpkg-new", ".dpkg-tmp", ".dpkg-dist", ".sig")


@dataclass(frozen=True)
class KexecTarget:
    """A kernel to kexec into: paths in the PE (under the mounted root), and where the line came from."""

    kernel: Path
    initrd: Path | None
    cmdline: str
    version: str | None = None
    source: str = ""


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key comparing digit runs as numbers: 6.1.0-9 < 6.1.0-13 < 6.10.0-1."""
    return tuple((1, int(t), "") if t.isdigit() else (0, 0, t) for t in re.findall(r"\d+|\D+", text))


def resolve_in_root(root: Path, path: Path, depth: int = 8) -> Path | None:
    """``path`` (under ``root``) with symlinks followed as the new OS would: an absolute target is
    taken relative to ``root``, never the PE's /. None if it dangles or loops."""
    for _ in range(depth):
        if not path.is_symlink():
            return path if path.exists() else None
        target = Path(path.readlink().as_posix())
        path = root / target.relative_to("/") if target.is_absolute() else path.parent / target
    return None


def _kernel_files(root: Path) -> tuple[Path, Path | None, str | None] | None:
    boot = root / "boot"
    versions = [p.name[len("vmlinuz-"):] for p in (boot.glob("vmlinuz-*") if boot.is_dir() else [])
                if not p.name.endswith(_SKIP_SUFFIXES) and resolve_in_root(root, p) is not None]
    versions.sort(key=natural_key, reverse=True)
    with_initrd = [v for v in versions if resolve_in_root(root, boot / f"initrd.img-{v}") is not None]
    if with_initrd:
        v = with_initrd[0]
        return boot / f"vmlinuz-{v}", boot / f"initrd.img-{v}", v
    for where in (root, boot):  # Debian's symlinks: /vmlinuz -> boot/vmlinuz-<version>
        kernel = resolve_in_root(root, where / "vmlinuz")
        if kernel is not None:
            initrd = resolve_in_root(root, where / "initrd.img")
            version = kernel.name[len("vmlinuz-"):] if kernel.name.startswith("vmlinuz-") else None
            return kernel, initrd, version
    if versions:  # a kernel without an initrd (everything it needs built in)
        return boot / f"vmlinuz-{versions[0]}", None, versions[0]
    return None


def _args(words: list[str]) -> str:
    # Unexpanded GRUB variables ($vt_handoff, ${extra_cmdline}) would reach the kernel literally.
    return " ".join(w for w in words if "$" not in w)


def grub_cfg_cmdline(text: str, kernel_name: str | None = None) -> str | None:
    """The arguments of the ``linux`` line of the first menuentry (or of the first whose kernel is
    ``kernel_name``) in a grub.cfg; None if it has none."""
    first: str | None = None
    in_entry = False
    for raw in text.splitlines():
        line = raw.strip()
        if re.match(r"menuentry\s", line):
            in_entry = True
        elif in_entry and re.match(r"linux(efi|16)?\s", line):
            try:
                words = shlex.split(line, comments=False)
            except ValueError:
                words = line.split()
            if len(words) < 2:
                continue
            args = _args(words[2:])
            if kernel_name is None or Path(words[1]).name == kernel_name:
                return args
            first = args if first is None else first
    return first


def _assignments(text: str, values: dict[str, str]) -> None:
    """Apply a shell file's ``NAME="value"`` lines for the GRUB_CMDLINE variables (what update-grub
    sources), expanding references to variables seen before."""
    for raw in text.splitlines():
        m = re.match(r"\s*(?:export\s+)?(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)=(.*)$", raw)
        if not m:
            continue

        def expand(ref: re.Match[str]) -> str:
            return values.get(ref.group(1) or ref.group(2), "")

        try:
            words = shlex.split(m.group(2), comments=True)
        except ValueError:
            continue
        values[m.group(1)] = re.sub(r"\$\{(\w+)\}|\$(\w+)", expand, " ".join(words))


def fstab_root(text: str) -> str | None:
    """The device of the ``/`` line of an fstab (UUID=..., LABEL=..., /dev/...), or None."""
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[1] == "/":
            return fields[0]
    return None


def default_grub_cmdline(root: Path) -> str | None:
    """The line update-grub would write, from etc/fstab and etc/default/grub(.d); None without a root device."""
    fstab = root / "etc" / "fstab"
    device = fstab_root(fstab.read_text(errors="replace")) if fstab.is_file() else None
    if device is None:
        return None
    values: dict[str, str] = {}
    files = [root / "etc" / "default" / "grub", *sorted((root / "etc" / "default" / "grub.d").glob("*.cfg"))]
    for f in files:
        if f.is_file():
            _assignments(f.read_text(errors="replace"), values)
    return " ".join(w for w in [f"root={device}", "ro", *(values.get(v, "") for v in _GRUB_VARS)] if w)


def find_kernel(root: Path) -> KexecTarget | None:
    """What to kexec into from the new OS mounted at ``root``; None when there is no kernel or no
    way to tell its root device (then reboot through the firmware instead)."""
    found = _kernel_files(root)
    if found is None:
        log.info("kexec: no kernel in %s/boot (vmlinuz-<version>) nor a vmlinuz symlink", root)
        return None
    kernel, initrd, version = found
    for name in ("grub", "grub2"):
        cfg = root / "boot" / name / "grub.cfg"
        if cfg.is_file():
            line = grub_cfg_cmdline(cfg.read_text(errors="replace"), kernel.name)
            if line is not None:
                return KexecTarget(kernel, initrd, line, version, f"boot/{name}/grub.cfg")
    line = default_grub_cmdline(root)
    if line is None:
        log.info("kexec: %s has no grub.cfg menuentry and no / line in etc/fstab: no root= to give", root)
        return None
    return KexecTarget(kernel, initrd, line, version, "etc/default/grub + etc/fstab")


def kexec_load(target: KexecTarget, run: Runner = run_tool) -> None:
    """Load ``target`` for the next ``kexec -e`` (which the PE's PID 1 runs)."""
    argv = ["kexec", "-l", str(target.kernel)]
    if target.initrd is not None:
        argv.append(f"--initrd={target.initrd}")
    argv.append(f"--command-line={target.cmdline}")
    done = run(argv, timeout=120)
    if done.returncode == NOT_INSTALLED:
        raise DeviceError("kexec is not installed in the PE (package kexec-tools): reboot through the firmware")
    if not done.ok and "not permitted" in done.stderr:
        # Under Secure Boot the kernel is locked down and refuses kexec_load; kexec_file_load (-s)
        # is allowed for a kernel whose signature it trusts.
        done = run([argv[0], "-s", *argv[1:]], timeout=120)
    if not done.ok:
        detail = (done.stderr.strip() or done.stdout.strip() or "no output")[:1000]
        raise DeviceError(f"kexec could not load {target.kernel} (status {done.returncode}): {detail}. "
                          "Reboot through the firmware instead")
