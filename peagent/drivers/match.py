"""Which driver package each device of this machine gets, and why: the matcher.

Input: the machine's devices (peagent.drivers.hwids, from the inventory), the store's index
(peagent.drivers.store) and the target: which OS family, architecture and version the new OS is,
and the machine's make and model. Output: one :class:`Choice` per device that has a driver,
with the reasons every other candidate lost, and the devices nothing matched (reported, not an
error: a device without a driver is common, the in-box drivers often cover it).

The rules, in order:

1. **Never across architectures or OS families.** A Windows package's ``<arch>`` folder, and
   each INF's decorated Models sections (peagent.drivers.rank.applicable), must fit the new
   Windows; a Linux module must be built for a kernel release the new OS has.
2. **Make/model groups first.** Packages of this machine's own group (``<make>/<model>``, then
   ``<make>/_generic``) are preferred: when any of them matches a device, generic packages are
   not considered for it. Names compare without regard to case.
3. **Windows ranks as Windows does** (peagent.drivers.rank: identifier score, signature,
   feature score, then DriverVer date and version); the best package wins.
4. **Linux matches as kmod does:** each module's ``alias`` patterns against the device's
   modaliases with ``fnmatch``; every matching module of the best group is injected (the kernel
   loads each one that claims the device; usually there is one).

Candidates are found through a dictionary of upper-cased ids, so a match is proportional to the
machine's devices, not to the size of the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peagent.drivers.hwids import Device
from peagent.drivers.kmod import matches
from peagent.drivers.rank import Candidate, applicable, explain, normalize_arch, rank_candidates
from peagent.drivers.store import KernelModule, Package, StoreIndex


@dataclass(frozen=True)
class Target:
    family: str  # "windows" or "linux"
    arch: str  # amd64, x86, arm64 (Windows' names; Linux's x86_64 is normalized to amd64)
    make: str | None = None
    model: str | None = None
    windows_version: tuple[int, int, int] | None = None  # major, minor, build
    windows_label: str | None = None  # the store's <os> folder label this Windows takes (win10, win11, ...)
    releases: tuple[str, ...] = ()  # Linux: the kernel releases the new OS has


@dataclass(frozen=True)
class Choice:
    device: Device
    package: Package
    what: str  # "e1d68x64.inf [E15B8.NTamd64]" or "module e1000"
    matched: str  # the device id or modalias that matched, and what it matched
    group: str  # the package's make/model group
    reasons: tuple[str, ...]  # the winner's line, then why each other candidate lost
    module: KernelModule | None = None  # Linux: the module to inject
    install_section: str | None = None  # Windows: the INF's install section
    inf: str | None = None  # Windows: the INF's path relative to the package


@dataclass(frozen=True)
class MatchResult:
    choices: tuple[Choice, ...]
    unmatched: tuple[Device, ...]

    def lines(self, *, each_unmatched: bool = True) -> list[str]:
        """Every choice with its reasons; the devices without a driver one by one, or counted in one line."""
        out = []
        for c in self.choices:
            out.append(f"{c.device.description}: {c.package.id} ({c.what}, group {c.group}); matched {c.matched}")
            out += [f"  {r}" for r in c.reasons]
        if each_unmatched:
            out += [f"{d.description}: no driver in the store (the OS's own, if any)" for d in self.unmatched]
        elif self.unmatched:
            buses = ", ".join(f"{sum(d.bus == b for d in self.unmatched)} {b.upper()}"
                              for b in dict.fromkeys(d.bus for d in self.unmatched))
            out.append(f"{len(self.unmatched)} devices without a driver in the store ({buses}): the OS's own drivers, "
                       "if any (`peagent drivers match` lists them)")
        return out

    def packages(self) -> list[Package]:
        return list({c.package.id: c.package for c in self.choices}.values())


def group_rank(package: Package, target: Target) -> int | None:
    """0 for the machine's own make/model, 1 for its make, 2 for generic; None for another machine's."""
    def same(a: str | None, b: str | None) -> bool:
        return a is not None and b is not None and a.strip().lower() == b.strip().lower()

    if package.make is None:
        return 2
    if not same(package.make, target.make):
        return None
    if package.model is None:
        return 1
    return 0 if same(package.model, target.model) else None


def match(devices: Sequence[Device], index: StoreIndex, target: Target) -> MatchResult:
    usable = [(p, g) for p in index.packages if p.family == target.family
              for g in [group_rank(p, target)] if g is not None and _fits(p, target)]
    if target.family == "windows":
        return _match_windows(devices, usable, target)
    return _match_linux(devices, usable, target)


def _fits(package: Package, target: Target) -> bool:
    if target.family == "windows":
        return (package.arch is None or package.arch == normalize_arch(target.arch)) and \
            (package.os is None or target.windows_label is None or package.os.lower() == target.windows_label.lower())
    return True


def _match_windows(devices: Sequence[Device], usable: list[tuple[Package, int]], target: Target) -> MatchResult:
    assert target.windows_version is not None, "a Windows target needs its version"
    arch = normalize_arch(target.arch)
    by_id: dict[str, list[tuple[Candidate, Package, int]]] = {}
    for package, group in usable:
        for inf in package.infs:
            for entry in applicable(inf, arch, target.windows_version):
                candidate = Candidate(package.id, inf, entry)
                for ident in (entry.hardware_id, *entry.compatible_ids):
                    by_id.setdefault(ident.upper(), []).append((candidate, package, group))
    choices, unmatched = [], []
    for device in devices:
        found = {id(c): (c, p, g) for ident in (*device.hardware_ids, *device.compatible_ids)
                 for c, p, g in by_id.get(ident.upper(), [])}
        if not found:
            unmatched.append(device)
            continue
        best_group = min(g for _, _, g in found.values())
        pool = [(c, p) for c, p, g in found.values() if g == best_group]
        ranked = rank_candidates(device.hardware_ids, device.compatible_ids, [c for c, _ in pool], arch)
        if not ranked:
            unmatched.append(device)
            continue
        winner = ranked[0]
        package = next(p for c, p in pool if c.package_id == winner.package_id)
        inf = next(c.inf for c, _ in pool if c.package_id == winner.package_id and c.entry == winner.entry)
        inf_rel = inf.path.removeprefix(package.id + "/")
        skipped = len({p.id for c, p, g in found.values() if g != best_group})
        reasons = explain(ranked) + ([f"not considered: {skipped} package(s) of a less specific group (this "
                                      "machine's own make/model group comes first)"] if skipped else [])
        choices.append(Choice(device, package, f"{inf_rel} [{winner.entry.install_section}]",
                              f"{winner.device_id} = {winner.inf_id}, rank 0x{winner.rank:08X}", package.group,
                              tuple(reasons), install_section=winner.entry.install_section, inf=inf_rel))
    return MatchResult(tuple(choices), tuple(unmatched))


def _match_linux(devices: Sequence[Device], usable: list[tuple[Package, int]], target: Target) -> MatchResult:
    choices, unmatched = [], []
    for device in devices:
        hits = []
        for package, group in usable:
            for module in package.modules:
                pattern = next((a for a in module.info.aliases for m in device.modaliases if matches(a, m)), None)
                if pattern is not None:
                    hits.append((group, package, module, pattern))
        if not hits:
            unmatched.append(device)
            continue
        # A module for a kernel the new OS lacks cannot load: it loses, whatever its group.
        fitting = [h for h in hits if h[2].info.release in target.releases]
        stale = [f"lost: {p.id} module {m.info.name}: built for {m.info.release}, the new OS has "
                 f"{', '.join(target.releases) or 'no kernel'}" for _, p, m, _ in hits if m.info.release not in
                 target.releases]
        if not fitting:
            unmatched.append(device)
            continue
        best = min(h[0] for h in fitting)
        for _, package, module, pattern in [h for h in fitting if h[0] == best]:
            reasons = [f"chosen: module {module.info.name} alias {pattern}", *stale]
            reasons += [f"lost: {p.id} module {m.info.name}: a less specific group" for g, p, m, _ in fitting
                        if g != best]
            choices.append(Choice(device, package, f"module {module.info.name}", f"{device.modaliases[0]} ~ "
                                  f"{pattern}", package.group, tuple(reasons), module=module))
    return MatchResult(tuple(choices), tuple(unmatched))
