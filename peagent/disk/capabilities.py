"""What a disk can do to be erased, probed once and kept as plain data (:class:`EraseCaps`).

The erase modes (see :mod:`peagent.disk.erase`) need different things from a disk, and a plan
must know before the first write whether the disk has them:

* **discard** needs the block layer's discard support: sysfs ``queue/discard_max_bytes`` > 0.
  What a discarded block reads as afterwards is the device's business. The kernel no longer
  says (``queue/discard_zeroes_data`` reads 0 everywhere since Linux 4.12), so it is taken from
  the device itself: an NVMe namespace's DLFEAT (bits 2:0 = 001b: deallocated blocks read as
  zeroes), an ATA drive's "Deterministic read ZEROs after TRIM" (``hdparm -I``), and a loop
  device, whose discards are holes punched in its backing file. Anything else is unknown.
* **zero** works on every block device: ``BLKZEROOUT`` is offloaded to the device when
  ``queue/write_zeroes_max_bytes`` > 0 (NVMe Write Zeroes, SCSI WRITE SAME, a loop device's
  fallocate), and otherwise the kernel writes zero pages itself, at the disk's write speed.
* **secure** needs the drive's own erase commands:

  - NVMe, from ``nvme id-ctrl -o json`` on the namespace's controller: OACS bit 1 (Format NVM
    supported); FNA bit 0 (a format applies to all namespaces), bit 1 (a secure erase applies to
    all namespaces), bit 2 (cryptographic erase supported); SANICAP bits 0/1/2 (sanitize crypto
    erase / block erase / overwrite). ``nvme id-ns -o json`` gives DLFEAT. The controller's other
    namespaces are counted in sysfs, because a format or sanitize that spans namespaces would
    erase them too.
  - ATA (SATA, or a SATA drive behind a SAS HBA), from ``hdparm -I``'s "Security:" section:
    supported, enabled (a password is set), locked, frozen, "expired: security count",
    "supported: enhanced erase", and the drive's estimates ("2min for SECURITY ERASE UNIT. 4min
    for ENHANCED SECURITY ERASE UNIT."). A drive without the feature set has no such section.
  - A disk behind a USB bridge gets nothing probed: peagent sends no ATA or NVMe security command
    through a bridge, whatever it claims (many mistranslate pass-through, and a failed erase can
    leave the drive locked). virtio, loop, MMC and SCSI disks have no secure erase here either.

:func:`probe` is the thin part that reads sysfs and runs the tools (through a
:data:`~peagent.disk.tools.Runner`); a missing tool or a failed identify is not an error but a
reason, kept in ``secure_problem``, that :func:`peagent.disk.erase.check_erase` reports if the task
asks for a secure erase. :func:`parse_nvme_id_ctrl`, :func:`parse_nvme_id_ns` and
:func:`parse_hdparm_identify` are pure and tested on captured outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from peagent.disk.tools import NOT_INSTALLED, Runner, run_tool

INTERFACES = ("nvme", "ata", "scsi", "virtio", "usb", "mmc", "loop", "unknown")
SANITIZE_KINDS = ("crypto", "block", "overwrite")  # SANICAP bits 0, 1, 2
PROBE_TIMEOUT = 60.0  # s: identify commands answer at once; a hung drive must not hang the inventory


@dataclass(frozen=True)
class EraseCaps:
    """A disk's erase capabilities; plain fields, so that it travels as JSON in the inventory."""

    device: str
    size: int = 0
    interface: str = "unknown"  # one of INTERFACES: which tools apply
    logical_block_size: int = 512
    # discard (BLKDISCARD)
    discard: bool = False
    discard_max_bytes: int = 0
    discard_granularity: int = 0
    discard_zeroes: bool | None = None  # do discarded blocks read as zeroes? None: unknown
    discard_zeroes_reason: str = ""
    # write zeroes (BLKZEROOUT): offloaded to the device, or the kernel writes zero pages
    write_zeroes: bool = False
    write_zeroes_max_bytes: int = 0
    # NVMe (nvme id-ctrl / id-ns on the namespace's controller)
    nvme_controller: str | None = None  # /dev/nvme0
    nvme_nsid: int | None = None
    nvme_namespaces: int = 0  # namespaces the controller shows (a format may span them)
    nvme_format: bool = False  # OACS bit 1
    nvme_format_all_namespaces: bool = False  # FNA bit 0
    nvme_secure_erase_all_namespaces: bool = False  # FNA bit 1
    nvme_crypto_erase: bool = False  # FNA bit 2: Format NVM with SES=2
    nvme_sanitize: tuple[str, ...] = ()  # SANICAP: "crypto", "block", "overwrite"
    nvme_deallocated_reads_zero: bool | None = None  # DLFEAT bits 2:0 == 001b
    # ATA security (hdparm -I)
    ata_security_supported: bool = False
    ata_security_enabled: bool = False  # a user password is set
    ata_security_locked: bool = False
    ata_security_frozen: bool = False
    ata_security_count_expired: bool = False  # too many wrong passwords: needs a power cycle
    ata_enhanced_erase: bool = False
    ata_erase_minutes: int | None = None  # the drive's estimate ("more than 508" reads 508)
    ata_enhanced_erase_minutes: int | None = None
    # why the secure-erase fields above could not be probed (USB bridge, tool missing, ...)
    secure_problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "nvme_sanitize": list(self.nvme_sanitize)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> EraseCaps:
        """Rebuild from :meth:`to_dict` output; unknown keys (a newer agent's) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        values["nvme_sanitize"] = tuple(values.get("nvme_sanitize", ()))
        return cls(**values)


# --- parsers: pure, tested on captured outputs ------------------------------------------------


@dataclass(frozen=True)
class NvmeController:
    format: bool
    format_all_namespaces: bool
    secure_erase_all_namespaces: bool
    crypto_erase: bool
    sanitize: tuple[str, ...]
    model: str | None = None
    serial: str | None = None


def parse_nvme_id_ctrl(text: str) -> NvmeController:
    """``nvme id-ctrl -o json`` -> the fields that matter for erasing; ValueError if not that."""
    doc = _json_object(text, "nvme id-ctrl")
    oacs, fna, sanicap = (_int_field(doc, key, "nvme id-ctrl") for key in ("oacs", "fna", "sanicap"))
    return NvmeController(
        format=bool(oacs & 0x2),
        format_all_namespaces=bool(fna & 0x1),
        secure_erase_all_namespaces=bool(fna & 0x2),
        crypto_erase=bool(fna & 0x4),
        sanitize=tuple(kind for bit, kind in enumerate(SANITIZE_KINDS) if sanicap & (1 << bit)),
        model=str(doc.get("mn", "")).strip() or None,
        serial=str(doc.get("sn", "")).strip() or None,
    )


def parse_nvme_id_ns(text: str) -> bool:
    """``nvme id-ns -o json`` -> whether deallocated blocks read as zeroes (DLFEAT bits 2:0 = 001b)."""
    doc = _json_object(text, "nvme id-ns")
    return _int_field(doc, "dlfeat", "nvme id-ns") & 0x7 == 0x1


@dataclass(frozen=True)
class AtaSecurity:
    supported: bool = False
    enabled: bool = False
    locked: bool = False
    frozen: bool = False
    count_expired: bool = False
    enhanced_erase: bool = False
    erase_minutes: int | None = None
    enhanced_erase_minutes: int | None = None
    trim: bool = False
    trim_reads_zero: bool = False
    model: str | None = None


# hdparm prints each bit of IDENTIFY word 128 as "\t\t<name>" (set) or "\tnot\t<name>" (clear),
# "(?)" instead of "not" for a clear "supported" bit.
_SECURITY_LINE = re.compile(r"(?:(not|\(\?\))\s+)?(supported|enabled|locked|frozen|expired: security count|"
                            r"supported: enhanced erase)")
_ERASE_TIME = re.compile(r"(?:more than )?(\d+)min for SECURITY ERASE UNIT")
_ENHANCED_TIME = re.compile(r"(?:more than )?(\d+)min for ENHANCED SECURITY ERASE UNIT")


def parse_hdparm_identify(text: str) -> AtaSecurity:
    """``hdparm -I`` -> the security state and TRIM facts; ValueError if not an ATA identify."""
    model_match = re.search(r"^\s*Model Number:\s*(.*?)\s*$", text, re.M)
    if "ATA device" not in text and model_match is None:
        raise ValueError("hdparm -I printed no ATA identify data (no \"ATA device\" or \"Model Number\")")
    flags: dict[str, bool] = {}
    erase = enhanced = None
    in_security = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():  # a section header
            in_security = line.strip().rstrip(":") == "Security"
            continue
        if not in_security:
            continue
        m = _SECURITY_LINE.fullmatch(line.strip())
        if m:
            flags[m.group(2)] = m.group(1) is None
            continue
        if (t := _ERASE_TIME.search(line)) is not None:
            erase = int(t.group(1))
        if (t := _ENHANCED_TIME.search(line)) is not None:
            enhanced = int(t.group(1))
    return AtaSecurity(
        supported=flags.get("supported", False),
        enabled=flags.get("enabled", False),
        locked=flags.get("locked", False),
        frozen=flags.get("frozen", False),
        count_expired=flags.get("expired: security count", False),
        enhanced_erase=flags.get("supported: enhanced erase", False),
        erase_minutes=erase,
        enhanced_erase_minutes=enhanced,
        trim="Data Set Management TRIM supported" in text,
        trim_reads_zero="Deterministic read ZEROs after TRIM" in text,
        model=model_match.group(1) or None if model_match else None,
    )


def discard_zeroes(interface: str, discard: bool, nvme_reads_zero: bool | None,
                   ata: AtaSecurity | None) -> tuple[bool | None, str]:
    """Whether discarded blocks read back as zeroes, and why peagent believes so."""
    if not discard:
        return None, "the device does not support discard"
    if interface == "loop":
        return True, ("discarded blocks of a loop device are holes punched in its backing file, "
                      "which read as zeroes")
    if interface == "nvme":
        if nvme_reads_zero is None:
            return None, "unknown: the namespace could not be identified (nvme id-ns)"
        if nvme_reads_zero:
            return True, "the namespace reports that deallocated blocks read as zeroes (DLFEAT)"
        return False, "the namespace does not report that deallocated blocks read as zeroes (DLFEAT)"
    if interface == "ata" and ata is not None:
        if ata.trim_reads_zero:
            return True, "the drive reports \"Deterministic read ZEROs after TRIM\""
        return False, "the drive does not report \"Deterministic read ZEROs after TRIM\""
    return None, "unknown: the device does not report what discarded blocks read as"


# --- probing: the only part that touches the system -------------------------------------------


def probe(device_node: str, sys_path: str, runner: Runner = run_tool) -> EraseCaps:
    """Probe one whole disk: ``device_node`` (/dev/sda) and its sysfs directory (/sys/block/sda)."""
    sys_dir = Path(sys_path)
    interface = interface_of(sys_dir)
    discard_max = _sys_int(sys_dir / "queue/discard_max_bytes")
    write_zeroes_max = _sys_int(sys_dir / "queue/write_zeroes_max_bytes")
    caps: dict[str, Any] = {
        "device": device_node,
        "size": _sys_int(sys_dir / "size") * 512,  # sysfs counts 512-byte sectors whatever the disk's
        "interface": interface,
        "logical_block_size": _sys_int(sys_dir / "queue/logical_block_size") or 512,
        "discard": discard_max > 0,
        "discard_max_bytes": discard_max,
        "discard_granularity": _sys_int(sys_dir / "queue/discard_granularity"),
        "write_zeroes": write_zeroes_max > 0,
        "write_zeroes_max_bytes": write_zeroes_max,
    }
    ata: AtaSecurity | None = None
    if interface == "nvme":
        caps.update(_probe_nvme(device_node, sys_dir, runner))
    elif interface == "ata":
        ata, found = _probe_ata(device_node, runner)
        caps.update(found)
    else:
        caps["secure_problem"] = _NO_SECURE_ERASE[interface].format(device=device_node)
    caps["discard_zeroes"], caps["discard_zeroes_reason"] = discard_zeroes(
        interface, discard_max > 0, caps.get("nvme_deallocated_reads_zero"), ata)
    return EraseCaps(**caps)


_NO_SECURE_ERASE = {
    "usb": "{device} is behind a USB bridge: peagent sends no ATA or NVMe security command through a "
           "USB bridge (many mistranslate them, and a failed erase can leave the drive locked)",
    "virtio": "{device} is a virtio disk: the hypervisor offers no secure erase (erase the backing "
              "storage on the host)",
    "loop": "{device} is a loop device: it has no secure erase",
    "mmc": "{device} is an MMC/SD card: peagent does not implement its secure erase",
    "scsi": "{device} is a SCSI/SAS disk: peagent does not implement SCSI SANITIZE",
    "unknown": "{device} is attached in a way peagent does not know: no secure erase is known for it",
}


def interface_of(sys_dir: Path) -> str:
    """How a disk is attached, as far as erasing is concerned (one of INTERFACES)."""
    name = sys_dir.name
    real = os.path.realpath(sys_dir)
    if name.startswith("loop"):
        return "loop"
    if "/usb" in real:  # before nvme/ata: a bridge decides what reaches the drive
        return "usb"
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith("mmcblk"):
        return "mmc"
    if "/virtio" in real:
        return "virtio"
    # libata (SATA, PATA, SATA behind a SAS HBA) shows SCSI vendor "ATA".
    if _sys_text(sys_dir / "device/vendor") == "ATA":
        return "ata"
    if (sys_dir / "device/scsi_disk").is_dir() or (sys_dir / "device/scsi_device").is_dir():
        return "scsi"
    return "unknown"


def _probe_nvme(device_node: str, sys_dir: Path, runner: Runner) -> dict[str, Any]:
    controller, dirs = nvme_controller(sys_dir)
    found: dict[str, Any] = {
        "nvme_controller": controller,
        "nvme_nsid": _nsid(sys_dir),
        "nvme_namespaces": _count_namespaces(dirs),
    }
    if controller is None:
        found["secure_problem"] = f"{device_node}: its NVMe controller was not found in sysfs"
        return found
    ctrl = runner(["nvme", "id-ctrl", controller, "-o", "json"], timeout=PROBE_TIMEOUT)
    if ctrl.returncode == NOT_INSTALLED:
        found["secure_problem"] = ("nvme-cli is not installed in this PE: NVMe Format and Sanitize are "
                                   "unavailable")
        return found
    if not ctrl.ok:
        found["secure_problem"] = f"the NVMe controller could not be identified: {ctrl.why()}"
        return found
    try:
        info = parse_nvme_id_ctrl(ctrl.stdout)
    except ValueError as exc:
        found["secure_problem"] = f"the NVMe controller could not be identified: {exc}"
        return found
    found.update(nvme_format=info.format, nvme_format_all_namespaces=info.format_all_namespaces,
                 nvme_secure_erase_all_namespaces=info.secure_erase_all_namespaces,
                 nvme_crypto_erase=info.crypto_erase, nvme_sanitize=info.sanitize)
    ns = runner(["nvme", "id-ns", device_node, "-o", "json"], timeout=PROBE_TIMEOUT)
    if ns.ok:
        # Unparsable: stays unknown, and verification checks that the data changed, not that it is zero.
        with contextlib.suppress(ValueError):
            found["nvme_deallocated_reads_zero"] = parse_nvme_id_ns(ns.stdout)
    return found


def nvme_controller(sys_dir: Path) -> tuple[str | None, list[Path]]:
    """The controller's character device (/dev/nvme0) of a namespace, and the sysfs directories
    that list the namespaces it shares a format with (the controller's, and with native NVMe
    multipath the subsystem's, where the namespace heads live)."""
    try:
        parent = (sys_dir / "device").resolve(strict=True)
    except OSError:
        return None, []
    if re.fullmatch(r"nvme\d+", parent.name):
        return f"/dev/{parent.name}", [parent]
    if parent.name.startswith("nvme-subsys"):  # multipath head: pick the first controller
        ctrls = sorted((p for p in parent.iterdir() if re.fullmatch(r"nvme\d+", p.name)),
                       key=lambda p: int(p.name[4:]))
        if ctrls:
            return f"/dev/{ctrls[0].name}", [ctrls[0].resolve(), parent]
    return None, []


def _count_namespaces(dirs: list[Path]) -> int:
    numbers = set()
    for d in dirs:
        for entry in d.iterdir() if d.is_dir() else []:
            m = re.fullmatch(r"nvme\d+(?:c\d+)?n(\d+)", entry.name)
            if m:
                numbers.add(m.group(1))
    return len(numbers)


def _nsid(sys_dir: Path) -> int | None:
    text = _sys_text(sys_dir / "nsid")
    if text and text.isdigit():
        return int(text)
    m = re.search(r"n(\d+)$", sys_dir.name)
    return int(m.group(1)) if m else None


def _probe_ata(device_node: str, runner: Runner) -> tuple[AtaSecurity | None, dict[str, Any]]:
    result = runner(["hdparm", "-I", device_node], timeout=PROBE_TIMEOUT)
    if result.returncode == NOT_INSTALLED:
        return None, {"secure_problem": "hdparm is not installed in this PE: ATA security erase is "
                                        "unavailable"}
    try:
        sec = parse_hdparm_identify(result.stdout)
    except ValueError as exc:
        why = result.why() if not result.ok else str(exc)
        return None, {"secure_problem": f"the drive could not be identified: {why}"}
    return sec, {
        "ata_security_supported": sec.supported,
        "ata_security_enabled": sec.enabled,
        "ata_security_locked": sec.locked,
        "ata_security_frozen": sec.frozen,
        "ata_security_count_expired": sec.count_expired,
        "ata_enhanced_erase": sec.enhanced_erase,
        "ata_erase_minutes": sec.erase_minutes,
        "ata_enhanced_erase_minutes": sec.enhanced_erase_minutes,
    }


def _json_object(text: str, tool: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{tool} printed no JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{tool} printed JSON that is not an object")
    return doc


def _int_field(doc: Mapping[str, Any], key: str, tool: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{tool} JSON has no integer field {key!r}")
    return value


def _sys_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _sys_int(path: Path) -> int:
    text = _sys_text(path)
    try:
        return int(text) if text else 0
    except ValueError:
        return 0
