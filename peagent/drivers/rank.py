"""Which driver package Windows would install on a device, and why the others lose.

Windows makes two decisions, and this module makes them the same way, offline, from parsed INFs
(:mod:`peagent.drivers.inf`):

**Which Models sections apply** (WDK "INF Manufacturer section", "Combining platform extensions with
operating system versions"). For each [Manufacturer] line Windows takes, among the TargetOSVersion
decorations listed, the one for the target's architecture whose version (major, minor, build) is
closest to but not above the target OS -- ``NTamd64.10.0...16299`` on build 19045, but ``NTamd64.6.1``
on build 14393 -- and uses only that section. A decoration without a version (``NTamd64``) applies
to every version. The undecorated section applies only on x86 (non-x86 decoration has been
mandatory since Windows Server 2003 SP1); a bare ``NT`` decoration is treated the same way here,
conservatively: a package that does not name the architecture is never injected into another.

**The rank** (WDK "How Windows ranks drivers", Vista and later): ``0xSSGGTHHH``, lower is better.

- ``SS`` signature score: 0x00 for a signed package. We cannot verify Authenticode or WHQL
  signatures offline in the PE, so *signed* here means "has a CatalogFile for the target
  architecture" (``CatalogFile.NTamd64``, ``CatalogFile.NT`` or plain ``CatalogFile``), and
  anything else is unsigned, 0x80 (Windows' order is trusted < unsigned; the value mirrors
  SIGNERSCORE_UNSIGNED's high byte, only the order matters). Windows' finer step for unsigned
  packages with a ``.NT`` install section is not modelled.
- ``GG`` feature score: the install section's FeatureScore, 0xFF when it sets none (nearly always).
- ``THHH`` identifier score: T says which lists matched -- device hardware id to INF hardware id 0,
  device hardware id to INF compatible id 1, device compatible id to INF hardware id 2, compatible
  to compatible 3 -- and HHH is the position of the matched id in the device's list, so a match on
  the device's most specific id (with subsystem and revision) beats one on vendor and device only.

Equal ranks go to the newer DriverVer date, then the higher DriverVer version; after that, the
order is made deterministic by package id. Ids compare case-insensitively.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from peagent.drivers.inf import ARCHES, Inf, ModelEntry, TargetOS
from peagent.errors import TaskError, describe

SIGNED = 0x00
UNSIGNED = 0x80
VER_NT_WORKSTATION = 1
_ARCH_ALIASES = {"x86_64": "amd64", "x64": "amd64", "aarch64": "arm64", "i386": "x86", "i486": "x86",
                 "i586": "x86", "i686": "x86", "ia32": "x86"}
# What T (the id-score type digit) means, for reasons and explanations.
_KINDS = ("device hardware id = INF hardware id", "device hardware id = INF compatible id",
          "device compatible id = INF hardware id", "device compatible id = INF compatible id")
_LOSES_BY_KIND = ("", "matched a compatible id of the INF", "matched a compatible id of the device",
                  "matched a compatible id of the device to a compatible id of the INF")


def normalize_arch(arch: str) -> str:
    """Windows' architecture name for ``arch`` (Linux names such as x86_64 and aarch64 accepted)."""
    name = _ARCH_ALIASES.get(arch.lower(), arch.lower())
    if name not in ARCHES:
        raise TaskError("arch", f"one of {', '.join(ARCHES)} (or x86_64, aarch64, i686)", describe(arch))
    return name


def _os_version(version: Sequence[int] | str) -> tuple[int, int, int]:
    parts = [int(p) for p in version.split(".")] if isinstance(version, str) else list(version)
    # An unknown build is 0: a section for a particular build then never applies (the safe side).
    parts = [*parts, 0, 0, 0][:3]
    return (parts[0], parts[1], parts[2])


def decoration_applies(decoration: TargetOS, arch: str, os_version: Sequence[int] | str,
                       product_type: int = VER_NT_WORKSTATION, suite: int = 0) -> bool:
    """Whether a TargetOSVersion decoration covers this architecture and OS version (or older)."""
    if (decoration.arch or "x86") != normalize_arch(arch):
        return False
    if decoration.version > _os_version(os_version):
        return False
    if decoration.product_type is not None and decoration.product_type != product_type:
        return False
    return decoration.suite is None or decoration.suite & suite == decoration.suite


def applicable(inf: Inf, arch: str, os_version: Sequence[int] | str, product_type: int = VER_NT_WORKSTATION,
               suite: int = 0) -> list[ModelEntry]:
    """The Models entries Windows would consider on this architecture and OS version (e.g. (10, 0, 19045))."""
    arch = normalize_arch(arch)
    chosen: list[tuple[str, TargetOS | None]] = []
    for mfg in inf.manufacturers:
        fitting = [d for d in mfg.decorations if decoration_applies(d, arch, os_version, product_type, suite)]
        if fitting:
            # closest version wins; at equal versions the one naming a product type or suite is more specific
            best = max(fitting, key=lambda d: (d.version, d.product_type is not None, d.suite is not None))
            chosen.append((mfg.models_section.lower(), best))
        elif arch == "x86":
            chosen.append((mfg.models_section.lower(), None))
    picked = {(section, d.text.lower() if d else None) for section, d in chosen}
    return [m for m in inf.models
            if (m.models_section.lower(), m.decoration.text.lower() if m.decoration else None) in picked]


@dataclass(frozen=True)
class Candidate:
    """One applicable Models entry of one package: what :func:`rank_candidates` ranks."""

    package_id: str
    inf: Inf
    entry: ModelEntry


def candidates(package_id: str, inf: Inf, arch: str, os_version: Sequence[int] | str,
               product_type: int = VER_NT_WORKSTATION, suite: int = 0) -> list[Candidate]:
    """The package's entries that :func:`applicable` keeps, ready for :func:`rank_candidates`."""
    return [Candidate(package_id, inf, e) for e in applicable(inf, arch, os_version, product_type, suite)]


def catalog_for(inf: Inf, arch: str) -> str | None:
    """The catalog file that signs ``inf`` on ``arch``: the most specific CatalogFile decoration present."""
    arch = normalize_arch(arch)
    for decoration in (f"nt{arch}", "nt", ""):
        if decoration in inf.catalog_files:
            return inf.catalog_files[decoration]
    return None


@dataclass(frozen=True)
class Ranked:
    package_id: str
    entry: ModelEntry
    device_id: str  # the device's id that matched, as the device reports it
    inf_id: str  # the INF's id that matched, as the INF writes it
    rank: int  # 0xSSGGTHHH
    reason: str  # one human line: what matched, signature, rank, DriverVer
    date: datetime.date | None = None
    version: tuple[int, int, int, int] | None = None
    catalog: str | None = None  # the catalog that counts as its signature, None when unsigned

    @property
    def kind(self) -> int:
        """T: 0 hardware/hardware, 1 hardware/INF compatible, 2 compatible/INF hardware, 3 compatible/compatible."""
        return (self.rank >> 12) & 0xF


def _index(ids: Sequence[str]) -> dict[str, tuple[int, str]]:
    index: dict[str, tuple[int, str]] = {}
    for position, device_id in enumerate(ids[:0x1000]):  # HHH has three hex digits
        index.setdefault(device_id.upper(), (position, device_id))
    return index


def _score(hw_index: dict[str, tuple[int, str]], compat_index: dict[str, tuple[int, str]],
           entry: ModelEntry) -> tuple[int, str, str] | None:
    best: tuple[int, str, str] | None = None
    pairs = [(0x0000, entry.hardware_id)] if entry.hardware_id else []
    pairs += [(0x1000, c) for c in entry.compatible_ids]
    for inf_base, inf_id in pairs:
        wanted = inf_id.upper()
        for device_base, index in ((0x0000, hw_index), (0x2000, compat_index)):
            if wanted in index:
                position, device_id = index[wanted]
                found = (device_base + inf_base + position, device_id, inf_id)
                if best is None or found[0] < best[0]:
                    best = found
    return best


def identifier_score(device_hwids: Sequence[str], device_compat_ids: Sequence[str],
                     entry: ModelEntry) -> tuple[int, str, str] | None:
    """The best (lowest) identifier score of ``entry`` for the device, with the device and INF ids that
    gave it; None when no id matches."""
    return _score(_index(device_hwids), _index(device_compat_ids), entry)


def rank_candidates(device_hwids: Sequence[str], device_compat_ids: Sequence[str], candidates: Iterable[Candidate],
                    arch: str) -> list[Ranked]:
    """The candidates that match the device, best first (the first is what Windows would install)."""
    ranked = []
    hw_index, compat_index = _index(device_hwids), _index(device_compat_ids)  # once per device, not per entry
    for c in candidates:
        score = _score(hw_index, compat_index, c.entry)
        if score is None:
            continue
        identifier, device_id, inf_id = score
        catalog = catalog_for(c.inf, arch)
        rank = ((SIGNED if catalog else UNSIGNED) << 24) | ((c.entry.feature_score & 0xFF) << 16) | identifier
        position = identifier & 0xFFF
        signature = f"signed ({catalog})" if catalog else f"unsigned (no CatalogFile for {normalize_arch(arch)})"
        version = ".".join(map(str, c.inf.version)) if c.inf.version else "none"
        reason = (f"{c.package_id}: {c.entry.description!r} [{c.entry.install_section}]: "
                  f"{_KINDS[identifier >> 12]}, device id #{position} {device_id}, INF id {inf_id}; {signature}; "
                  f"rank 0x{rank:08X}; DriverVer {c.inf.date or 'none'}, {version}")
        ranked.append(Ranked(c.package_id, c.entry, device_id, inf_id, rank, reason, c.inf.date, c.inf.version,
                             catalog))
    return sorted(ranked, key=_order)


def _order(r: Ranked) -> tuple[int, int, tuple[int, ...], str, str, str]:
    date = (r.date or datetime.date.min).toordinal()
    version = tuple(-n for n in (r.version or (0, 0, 0, 0)))
    return (r.rank, -date, version, r.package_id, r.entry.install_section, r.entry.hardware_id)


def explain(ranked: Sequence[Ranked]) -> list[str]:
    """One line for the winner and one per loser saying why it lost (``ranked`` as rank_candidates returns it)."""
    if not ranked:
        return []
    winner = ranked[0]
    lines = [f"chosen: {winner.reason}"]
    for loser in ranked[1:]:
        lines.append(f"lost: {loser.package_id}: {loser.entry.description!r} [{loser.entry.install_section}]: "
                     f"{_why_lost(loser, winner)}")
    return lines


def _why_lost(loser: Ranked, winner: Ranked) -> str:
    if loser.rank != winner.rank:
        head = f"rank 0x{loser.rank:08X} > winner's 0x{winner.rank:08X}: "
        if loser.rank >> 24 != winner.rank >> 24:
            return head + "unsigned (no catalog file for the architecture), the winner is signed"
        if (loser.rank >> 16) & 0xFF != (winner.rank >> 16) & 0xFF:
            return head + (f"feature score 0x{(loser.rank >> 16) & 0xFF:02X} worse than "
                           f"0x{(winner.rank >> 16) & 0xFF:02X}")
        if loser.kind != winner.kind:
            return head + f"{_LOSES_BY_KIND[loser.kind]} ({loser.device_id} = {loser.inf_id})"
        return head + (f"matched the device's less specific id #{loser.rank & 0xFFF} {loser.device_id}, "
                       f"the winner #{winner.rank & 0xFFF} {winner.device_id}")
    if loser.date != winner.date:
        return f"same rank, DriverVer {loser.date or 'missing'} older than {winner.date}"
    if loser.version != winner.version:
        old = ".".join(map(str, loser.version)) if loser.version else "missing"
        new = ".".join(map(str, winner.version or ()))
        return f"same rank and DriverVer date, version {old} lower than {new}"
    return "same rank, DriverVer date and version: the first package id in order wins"
