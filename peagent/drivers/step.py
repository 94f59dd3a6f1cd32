"""The drivers step of a deploy: the index before anything is written, the injection after.

1. :func:`load` (before the first destructive write): the task's ``drivers.index`` is fetched
   from the DPs and trusted by its signature or the task's pin (peagent.drivers.store), so a
   missing or untrusted store refuses the deploy while the disk is untouched.
2. :func:`inject` (after the image is written and verified, with the new OS mounted read-write):
   the new OS says what it is (Windows: architecture and version from its hives; Linux: its
   kernel releases); the machine's devices (peagent.drivers.hwids) are matched
   (peagent.drivers.match); only the matched packages are fetched, each file checked against the
   sha256 the signed index gives it; and they are injected (peagent.drivers.inject_windows,
   inject_linux). Every choice is reported: device, package, matched id, why the others lost.

Windows' part ends at the first boot, so :func:`inject` returns the commands the answer file
must run there (pnputil); the state step adds them to its specialize pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

from peagent.drivers.hwids import Device, devices
from peagent.drivers.inject_linux import FirmwareFile, ModuleFile, inject_linux, kernel_releases
from peagent.drivers.inject_windows import WindowsDriver, inject_windows
from peagent.drivers.match import MatchResult, Target, match
from peagent.drivers.store import Package, StoreIndex, load_index
from peagent.errors import StateError, VerifyError
from peagent.fetch import NotFoundError, candidate_urls, fetch_bytes
from peagent.image.sign import PublicKey
from peagent.inventory import Inventory
from peagent.state.template import Identity
from peagent.state.windows_target import describe_windows
from peagent.task import DriversSpec

INDEX_LIMIT = 256 << 20  # bytes: an index of thousands of INF packages is tens of MiB
FILE_LIMIT = 512 << 20  # bytes: the largest driver file fetched whole (GPU packages are big)
Emit = Callable[[str, str], None]


@dataclass(frozen=True)
class Loaded:
    index: StoreIndex
    bases: tuple[str, ...]  # the store's URL on each DP (where index.json is), preferred first
    trust: str


def load(spec: DriversSpec, dps: Sequence[str], keys: Sequence[PublicKey]) -> Loaded:
    urls = candidate_urls(spec.index, dps)
    data = fetch_bytes(urls, INDEX_LIMIT)
    signature = None
    with contextlib.suppress(NotFoundError):  # a pinned index needs none; load_index says what is missing
        signature = fetch_bytes([u + ".sig" for u in urls], 4096).decode().strip()
    index = load_index(data, signature, keys, spec.index_sha256)
    trust = f"pinned sha256 {spec.index_sha256}" if spec.index_sha256 else "a trusted key's signature"
    return Loaded(index, tuple(urljoin(u, ".") for u in urls), trust)


def inject(root: Path, kind: str, loaded: Loaded, inventory: Inventory, spec: DriversSpec, work: Path,
           emit: Emit) -> list[str]:
    """Match, fetch and inject into the OS at ``root``; the first-boot commands (Windows) to add."""
    found = devices(inventory)
    machine = Identity.of(inventory)
    if kind == "windows":
        image = describe_windows(root)
        build = image.build or 0
        target = Target("windows", image.arch, machine.vendor, machine.model, (image.major, image.minor, build),
                        spec.windows_label or windows_label(image.major, image.minor, build))
    else:
        target = Target("linux", platform.machine(), machine.vendor, machine.model,
                        releases=tuple(sorted(kernel_releases(root))))
    result = match(found, loaded.index, target)
    for line in result.lines(each_unmatched=False):
        emit("drivers", line)
    if spec.required and result.unmatched:
        raise StateError(f"drivers.required: no driver for {len(result.unmatched)} device(s): "
                         + "; ".join(d.description for d in result.unmatched[:5]))
    if not result.choices:
        emit("drivers", f"nothing to inject ({len(found)} devices, {len(loaded.index.packages)} packages)")
        return []
    fetched = {p.id: fetch_package(p, loaded.bases, work) for p in result.packages()}
    if kind == "windows":
        drivers = [WindowsDriver(c.package.id, fetched[c.package.id], c.inf or "", c.install_section or "",
                                 _class_guid(c.package, c.inf), _matched(c.device, c.matched))
                   for c in result.choices]
        lines, commands = inject_windows(root, drivers, arch=target.arch, build=target.windows_version[2]
                                         if target.windows_version else None)
    else:
        modules, firmware = _linux_files(result, fetched)
        lines, commands = inject_linux(root, modules, firmware), []
    for line in lines:
        emit("drivers", line)
    return commands


def windows_label(major: int, minor: int, build: int) -> str:
    """The store's usual <os> folder for a Windows version (docs/drivers.md)."""
    if major >= 10:
        return "win11" if build >= 22000 else "win10"
    return {(6, 3): "win81", (6, 2): "win8", (6, 1): "win7", (6, 0): "vista"}.get((major, minor), "xp")


def fetch_package(package: Package, bases: Sequence[str], work: Path) -> Path:
    """The package's files fetched into ``work``, each checked against the index's sha256."""
    where = work / package.id
    for f in package.files:
        data = fetch_bytes([urljoin(b, f"{package.id}/{f.path}") for b in bases], FILE_LIMIT)
        digest = hashlib.sha256(data).hexdigest()
        if digest != f.sha256 or len(data) != f.size:
            raise VerifyError(f"driver package {package.id}: {f.path} has sha256 {digest} ({len(data)} bytes), the "
                              f"signed index says {f.sha256} ({f.size} bytes): refusing it")
        path = where / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o644)
    return where


def _class_guid(package: Package, inf_rel: str | None) -> str | None:
    inf = next((i for i in package.infs if i.path.removeprefix(package.id + "/") == inf_rel), None)
    return inf.class_guid if inf else None


def _matched(device: Device, matched: str) -> tuple[str, ...]:
    # The device ids that a boot-critical driver's CriticalDeviceDatabase entries are made for.
    return tuple(device.hardware_ids[:2]) or (matched.split(" = ")[0],)


def _linux_files(result: MatchResult, fetched: dict[str, Path]) -> tuple[list[ModuleFile], list[FirmwareFile]]:
    modules: dict[str, ModuleFile] = {}
    for c in result.choices:
        if c.module is None:
            continue
        # A storage controller's module is needed before the root filesystem is reachable.
        critical = any(i.upper().startswith("PCI\\CC_01") for i in c.device.compatible_ids)
        key = f"{c.package.id}/{c.module.path}"
        old = modules.get(key)
        modules[key] = ModuleFile(fetched[c.package.id] / c.module.path, c.module.info.name, c.module.info.release,
                                  boot_critical=critical or (old.boot_critical if old else False))
    firmware = [FirmwareFile(fetched[p.id] / "firmware" / fw, fw) for p in result.packages() for fw in p.firmware]
    return list(modules.values()), firmware
