"""The UEFI edge: reading and changing the firmware's boot entries with efibootmgr.

Everything here runs a program or looks at a filesystem; the decisions are in peagent.boot.plan.
The kernel shows the firmware's variables in efivarfs (/sys/firmware/efi/efivars, mounted by the
PE's /init; :func:`read_vars` mounts it if not), and efibootmgr (with libefivar) reads and
writes them there.

Carrying out a plan (:func:`apply_boot`):

* ``efibootmgr -b XXXX -B`` deletes an entry (and takes it out of BootOrder itself);
* ``efibootmgr -c -d DISK -p N -L LABEL -l LOADER`` creates an entry for the loader on partition
  N of DISK (libefivar builds the ``HD(N,GPT,<guid>,...)/File(LOADER)`` path from the disk) and
  puts it first in BootOrder. With ``once`` the plan must leave BootOrder alone, so ``-C`` (create
  only) is used instead. efibootmgr prints the entries afterwards; the new number is the one that
  was not there before;
* ``efibootmgr -o A,B,...`` then writes the planned order explicitly (after ``-c`` it is the same
  order, but written from the plan, not left to efibootmgr's rule), ``-n XXXX`` sets BootNext,
  ``-N`` clears it, ``-b XXXX -a`` activates an entry.

Where the loader is on the new OS's ESP (:func:`find_loader`) and which partition is the ESP
(:func:`find_esp`, from ``sfdisk --json``) are found here too: the integrator needs both for the
plan.
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

from peagent.boot.efivars import BootVars, hexnum, parse_efibootmgr
from peagent.boot.plan import NEW, BootPlan, same_loader
from peagent.disk.tools import NOT_INSTALLED, Runner, ToolResult, run_tool
from peagent.errors import DeviceError

ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"  # GPT partition type GUID of an EFI System Partition
ESP_MBR_TYPE = "ef"
# The names of the EFI architectures, as in shim<arch>.efi and the removable path \EFI\BOOT\BOOT<ARCH>.EFI
_EFI_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "aa64", "arm64": "aa64", "i386": "ia32",
             "i686": "ia32", "riscv64": "riscv64", "loongarch64": "loongarch64"}


def efi_available(sys_root: Path = Path("/sys")) -> bool:
    """True when the PE was booted by UEFI (the kernel then shows /sys/firmware/efi)."""
    return (sys_root / "firmware" / "efi").is_dir()


def _efibootmgr(run: Runner, args: list[str]) -> ToolResult:
    done = run(["efibootmgr", *args], timeout=60)
    if done.returncode == NOT_INSTALLED:
        raise DeviceError("efibootmgr is not installed in the PE: the boot entry cannot be set "
                          "(add efibootmgr to buildroot/pe-packages.list)")
    if not done.ok:
        detail = (done.stderr.strip() or done.stdout.strip() or "no output")[:1500]
        raise DeviceError(f"efibootmgr {' '.join(args)} failed (status {done.returncode}): {detail}. "
                          "The firmware's boot entries may be partly changed: see `efibootmgr -v`")
    return done


def read_vars(run: Runner = run_tool, sys_root: Path = Path("/sys")) -> BootVars:
    """The firmware's boot state (``efibootmgr -v``), mounting efivarfs first if it is not."""
    efivars = sys_root / "firmware" / "efi" / "efivars"
    if efivars.is_dir() and not os.path.ismount(efivars) and not any(efivars.iterdir()):
        mounted = run(["mount", "-t", "efivarfs", "efivarfs", str(efivars)], timeout=30)
        if not mounted.ok:
            raise DeviceError(f"cannot mount efivarfs on {efivars}: {mounted.why()} (is CONFIG_EFIVAR_FS "
                              "in the PE's kernel?)")
    return parse_efibootmgr(_efibootmgr(run, ["-v"]).stdout)


def _child(directory: Path, name: str) -> Path | None:
    """``directory/name`` matched case-insensitively, as FAT names are."""
    try:
        children = sorted(directory.iterdir())
    except OSError:
        return None
    wanted = name.casefold()
    return next((c for c in children if c.name.casefold() == wanted), None)


def _firmware_path(esp_root: Path, file: Path) -> str:
    return "\\" + "\\".join(file.relative_to(esp_root).parts)


def find_loader(esp_root: Path, machine: str | None = None) -> str | None:
    """The loader to boot on a mounted ESP, as a firmware path (``\\EFI\\debian\\shimx64.efi``).

    In order: shim (it chains to GRUB and keeps Secure Boot working), GRUB, systemd-boot, in a
    vendor directory (EFI/<vendor>/, the first in name order); Windows Boot Manager; else the
    removable-media path EFI/BOOT/BOOTX64.EFI (BOOTAA64.EFI on arm64) that every firmware tries
    on its own. None when there is none of them. ``machine`` is ``platform.machine()``'s value.
    """
    arch = _EFI_ARCH.get((machine or platform.machine()).lower(), "x64")
    efi = _child(esp_root, "EFI")
    if efi is None or not efi.is_dir():
        return None
    vendors = sorted((d for d in efi.iterdir() if d.is_dir() and d.name.casefold() != "boot"),
                     key=lambda d: d.name.casefold())
    for name in (f"shim{arch}.efi", f"grub{arch}.efi", f"systemd-boot{arch}.efi"):
        for vendor in vendors:
            found = _child(vendor, name)
            if found is not None and found.is_file():
                return _firmware_path(esp_root, found)
    for parts in (("Microsoft", "Boot", "bootmgfw.efi"), ("BOOT", f"BOOT{arch.upper()}.EFI")):
        found = efi
        for part in parts:
            found = _child(found, part) if found is not None else None
        if found is not None and found.is_file():
            return _firmware_path(esp_root, found)
    return None


def parse_sfdisk_esp(text: str) -> tuple[int, str] | None:
    """(partition number, partition UUID) of the first EFI System Partition in ``sfdisk --json``
    output; None if there is none. On MBR (type ef) the UUID is Linux's ``<disk id>-<nn>``."""
    try:
        table = json.loads(text)["partitiontable"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DeviceError(f"sfdisk --json printed no partition table ({exc}): {text[:200]!r}") from exc
    label = table.get("label")
    for part in table.get("partitions", []):
        number = re.search(r"(\d+)$", str(part.get("node", "")))
        if number is None:
            continue
        kind = str(part.get("type", "")).lower()
        if label == "gpt" and kind == ESP_TYPE and part.get("uuid"):
            return int(number.group(1)), str(part["uuid"]).lower()
        if label == "dos" and kind == ESP_MBR_TYPE and str(table.get("id", "")).startswith("0x"):
            return int(number.group(1)), f"{int(table['id'], 16):08x}-{int(number.group(1)):02x}"
    return None


def find_esp(disk_path: str, run: Runner = run_tool) -> tuple[int, str] | None:
    """The ESP of a disk (``sfdisk --json``): (partition number, partition UUID), or None."""
    done = run(["sfdisk", "--json", disk_path], timeout=60)
    if not done.ok:
        raise DeviceError(f"cannot read the partition table of {disk_path}: {done.why()}")
    return parse_sfdisk_esp(done.stdout)


def _created(plan: BootPlan, listing: str, run: Runner) -> int:
    """The number efibootmgr gave the entry it just created: the one that was not there before."""
    for attempt in range(2):  # the listing -c printed, else a fresh `efibootmgr -v`
        text = listing if attempt == 0 else _efibootmgr(run, ["-v"]).stdout
        new = [e for e in parse_efibootmgr(text).entries if e.num not in plan.existing]
        if len(new) == 1:
            return new[0].num
        ours = [e for e in new if e.partuuid == plan.partuuid and same_loader(e.loader, plan.loader)]
        if len(ours) == 1:
            return ours[0].num
    raise DeviceError(f'efibootmgr created "{plan.label}" without error, but no new entry for '
                      f"{plan.partuuid} {plan.loader} shows in `efibootmgr -v`; the firmware may have refused it")


def apply_boot(plan: BootPlan, run: Runner = run_tool) -> list[str]:
    """Carry out ``plan`` with efibootmgr; the lines say what was done (entry numbers filled in)."""
    ours = plan.reuse
    done: list[str] = []
    for step in plan.steps:
        if step.action == "delete" and step.num is not None:
            _efibootmgr(run, ["-b", hexnum(step.num), "-B"])
        elif step.action == "create":
            # -c also puts the entry first in BootOrder; with once, BootOrder must stay as it is: -C.
            listing = _efibootmgr(run, ["-C" if plan.once else "-c", "-d", plan.disk, "-p", str(plan.partition),
                                        "-L", plan.label, "-l", plan.loader])
            ours = _created(plan, listing.stdout, run)
        elif step.action in ("activate", "order", "next"):
            num = step.num if step.num is not None else ours
            if num is None:
                raise DeviceError(f"boot plan step {step.action!r} comes before the entry exists (a bug)")
            if step.action == "activate":
                _efibootmgr(run, ["-b", hexnum(num), "-a"])
            elif step.action == "order":
                _efibootmgr(run, ["-o", ",".join(hexnum(n) for n in (num, *step.order))])
            else:
                _efibootmgr(run, ["-n", hexnum(num)])
        elif step.action == "clear-next":
            _efibootmgr(run, ["-N"])
        done.append(step.line(f"Boot{hexnum(ours)}" if ours is not None else NEW))
    return done
