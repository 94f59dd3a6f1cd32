"""The driver store: a directory of driver packages on the DP, and its signed index.

The store is plain files, laid out by a folder convention that says which machines and systems
each package is for (docs/drivers.md)::

    windows/<make>/<model>/<os>/<arch>/<package>/...    e1d.inf, e1d68x64.sys, e1d.cat, ...
    linux/<make>/<model>/<package>/...                  e1000e.ko.xz, firmware/intel/...

* ``<make>`` and ``<model>`` are the machine's DMI ``sys_vendor`` and ``product_name`` (Lenovo:
  ``product_version``) as written there, ``Dell Inc.``/``Latitude 5440``; ``_generic`` binds no
  make or model (``windows/_generic/_generic/...`` is for every machine, ``windows/Dell Inc./
  _generic/...`` for every Dell). When packages of a machine's own make/model group match, they
  are preferred over generic ones (the matcher's rule).
* ``<os>`` is a label of the Windows release the package is meant for (``win10``, ``win11``,
  ``server2022``) or ``_generic``; which Models sections apply to the exact build is the INF's
  decorations' business.
* ``<arch>`` is ``amd64``, ``x86``, ``arm64`` (``x64``, ``aarch64`` are read as these) or
  ``_generic`` (the INF's decorations decide); a package never crosses architectures.
* A *package* is one directory at the package level, with everything under it: a Windows package
  holds one or more ``.inf`` files (anywhere below it) and the files they copy; a Linux package
  holds kernel modules (``.ko``, ``.ko.xz``, ``.ko.zst``, ``.ko.gz``) and firmware under
  ``firmware/``, kept at its path relative to ``/lib/firmware``. Names starting with a dot are
  ignored; a symlinked package directory is followed (one package shared by several models).

:func:`index_store` walks the store once and records, per package, its id (its path relative
to the store, which is also where the agent fetches it from), its group, every file with its size
and sha256 (what the agent fetches and verifies, like image frames), and the matching data:
the parsed INFs (:mod:`peagent.drivers.inf`) or the modules' aliases, firmware and kernel release
(:mod:`peagent.drivers.kmod`). Bad input never stops it: a file that is not an INF, an unreadable
module, a file where a folder should be, is left out with a warning ``FILE[:LINE]: what``.

The index is JSON (``"format": 1``), written as ``index.json`` at the store's root and signed
exactly like an image manifest (peagent.image.sign): ``index.json.sig`` holds ``ed25519 <key id>
<signature>``. The agent accepts an index only when a trusted key signed it or the task pins its
sha256 (:func:`load_index`): whoever can change the index can choose which code runs in the kernel
of every machine deployed.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peagent.drivers.inf import Inf, InfError, parse_inf
from peagent.drivers.kmod import MODULE_SUFFIXES, ModInfo, ModuleError, parse_module
from peagent.drivers.rank import normalize_arch
from peagent.drivers.storejson import (
    inf_from_dict,
    inf_to_dict,
    modinfo_from_dict,
    modinfo_to_dict,
    optional,
    text,
)
from peagent.errors import ManifestError, SignatureError, TaskError, UsageError, describe
from peagent.image.sign import PublicKey, check_manifest, sign_manifest

FORMAT = 1
GENERIC = "_generic"
INDEX_NAME = "index.json"
SIGNATURE_NAME = "index.json.sig"
FIRMWARE_DIR = "firmware"
# The folder levels above a package, per family.
LEVELS = {"windows": ("make", "model", "os", "arch"), "linux": ("make", "model")}


@dataclass(frozen=True)
class StoreFile:
    path: str  # relative to the package directory, "/"-separated
    size: int
    sha256: str


@dataclass(frozen=True)
class KernelModule:
    path: str  # relative to the package directory
    info: ModInfo


@dataclass(frozen=True)
class Package:
    id: str  # the package directory relative to the store root, "/"-separated: windows/Dell Inc./...
    family: str  # "windows" or "linux"
    make: str | None  # None: _generic
    model: str | None
    os: str | None  # Windows only; None: _generic (and always for Linux)
    arch: str | None  # Windows only, normalized (amd64, x86, arm64, ...); None: _generic
    files: tuple[StoreFile, ...]
    infs: tuple[Inf, ...] = ()  # Inf.path is the store-relative path of the INF
    modules: tuple[KernelModule, ...] = ()
    firmware: tuple[str, ...] = ()  # paths relative to lib/firmware (package files firmware/<path>)

    @property
    def group(self) -> str:
        """The make/model group, for reports: 'Dell Inc./Latitude 5440', 'Dell Inc./*' or 'generic'."""
        if self.make is None:
            return "generic"
        return f"{self.make}/{self.model or '*'}"


@dataclass(frozen=True)
class StoreIndex:
    packages: tuple[Package, ...]
    warnings: tuple[str, ...] = ()

    @property
    def inf_count(self) -> int:
        return sum(len(p.infs) for p in self.packages)

    @property
    def module_count(self) -> int:
        return sum(len(p.modules) for p in self.packages)

    def to_json(self) -> str:
        with _no_cyclic_gc():
            return self._to_json()

    def _to_json(self) -> str:
        packages = [{"id": p.id, "family": p.family, "make": p.make, "model": p.model, "os": p.os, "arch": p.arch,
                     "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in p.files],
                     "infs": [inf_to_dict(i) for i in p.infs],
                     "modules": [{"path": m.path, **modinfo_to_dict(m.info)} for m in p.modules],
                     "firmware": list(p.firmware)} for p in self.packages]
        # Compact: a store of 2,000 INF packages indexes to some 20 MB, which every PE fetches.
        return json.dumps({"format": FORMAT, "packages": packages, "warnings": list(self.warnings)},
                          separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, data: bytes | str) -> StoreIndex:
        """The index from its JSON; ManifestError saying what is wrong when it is not one."""
        with _no_cyclic_gc():
            return cls._from_json(data)

    @classmethod
    def _from_json(cls, data: bytes | str) -> StoreIndex:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ManifestError(f"the driver index is not JSON ({exc}); rebuild it: peagent drivers index") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else describe(doc)
            raise ManifestError(f"expected a driver index of format {FORMAT}, found format {found!r}: "
                                "rebuild it with this agent's peagent drivers index")
        where = "the index"
        try:
            packages = []
            for number, item in enumerate(doc["packages"]):
                where = f"package {number}"
                packages.append(_package_from_dict(item))
            return cls(tuple(packages), tuple(text(w) for w in doc["warnings"]))
        except KeyError as exc:
            raise ManifestError(f"driver index, {where}: expected the field {exc}, found none") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"driver index, {where}: {exc}") from None


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    # An index is ~10^6 small objects without a single cycle; the cyclic collector, triggered by their
    # allocation, would walk them over and over (half the time of loading an index of 2,000 packages).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _package_from_dict(p: dict) -> Package:
    return Package(id=text(p["id"]), family=text(p["family"]), make=optional(p["make"]),
                   model=optional(p["model"]), os=optional(p["os"]), arch=optional(p["arch"]),
                   files=tuple(StoreFile(text(f["path"]), int(f["size"]), text(f["sha256"])) for f in p["files"]),
                   infs=tuple(inf_from_dict(i) for i in p["infs"]),
                   modules=tuple(KernelModule(text(m["path"]), modinfo_from_dict(m)) for m in p["modules"]),
                   firmware=tuple(text(f) for f in p["firmware"]))


def index_store(root: Path, locale: str = "0409") -> StoreIndex:
    """Walk the driver store at ``root`` (see the module docstring); bad input becomes warnings.

    ``locale`` chooses the [Strings.<LANGID>] INF descriptions are resolved from.
    """
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory: expected a driver store (windows/..., linux/...)")
    warnings: list[str] = []
    packages: list[Package] = []
    for top in _entries(root):
        if top.name in (INDEX_NAME, SIGNATURE_NAME) and top.is_file():
            continue
        if top.name in LEVELS and top.is_dir():
            _walk(root, top, top.name, {}, packages, warnings, locale)
        else:
            warnings.append(f"{top.relative_to(root)}: not part of the store: expected only windows/ and linux/ "
                            "folders (and the index) at its top; skipped")
    return StoreIndex(tuple(packages), tuple(warnings))


def _entries(directory: Path) -> list[Path]:
    return sorted((p for p in directory.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _walk(root: Path, directory: Path, family: str, group: dict[str, str | None], packages: list[Package],
          warnings: list[str], locale: str) -> None:
    levels = LEVELS[family]
    for entry in _entries(directory):
        where = entry.relative_to(root).as_posix()
        if len(group) == len(levels):
            if not entry.is_dir():
                warnings.append(f"{where}: a file where a package folder is expected "
                                f"({family}/{'/'.join(f'<{x}>' for x in levels)}/<package>/); skipped")
                continue
            package = _package(root, entry, family, group, warnings, locale)
            if package is not None:
                packages.append(package)
            continue
        level = levels[len(group)]
        if not entry.is_dir():
            warnings.append(f"{where}: a file where a <{level}> folder is expected "
                            f"({family}/{'/'.join(f'<{x}>' for x in levels)}/<package>/); skipped")
            continue
        value: str | None = None if entry.name == GENERIC else entry.name
        if level == "arch" and value is not None:
            try:
                value = normalize_arch(value)
            except TaskError:
                warnings.append(f"{where}: unknown architecture folder {entry.name!r} (expected amd64, x86, arm64, "
                                f"arm, ia64 or {GENERIC}); its packages are skipped")
                continue
        _walk(root, entry, family, {**group, level: value}, packages, warnings, locale)


def _package(root: Path, directory: Path, family: str, group: dict[str, str | None], warnings: list[str],
             locale: str) -> Package | None:
    package_id = directory.relative_to(root).as_posix()
    files: list[StoreFile] = []
    infs: list[Inf] = []
    modules: list[KernelModule] = []
    firmware: list[str] = []
    for path in _files(directory):
        relative = path.relative_to(directory).as_posix()
        where = f"{package_id}/{relative}"
        parse_inf_file = family == "windows" and relative.lower().endswith(".inf")
        parse_ko = family == "linux" and relative.endswith(MODULE_SUFFIXES)
        if not path.is_file():
            warnings.append(f"{where}: not a regular file (a FIFO, a device or a dangling link); left out")
            continue
        try:
            if parse_inf_file or parse_ko:
                data = path.read_bytes()
                size, digest = len(data), hashlib.sha256(data).hexdigest()
            else:
                with path.open("rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                size = path.stat().st_size
        except OSError as exc:
            # The agent could not verify what it fetches: the whole package goes.
            warnings.append(f"{where}: cannot read ({exc.strerror}); package {package_id} skipped")
            return None
        files.append(StoreFile(relative, size, digest))
        if parse_inf_file:
            inf = _inf(data, where, warnings, locale)
            if inf is not None:
                infs.append(inf)
        elif parse_ko:
            try:
                modules.append(KernelModule(relative, parse_module(data, where)))
            except ModuleError as exc:
                warnings.append(f"{exc}; module skipped")
        elif family == "linux" and relative.startswith(FIRMWARE_DIR + "/"):
            firmware.append(relative[len(FIRMWARE_DIR) + 1:])
    if family == "windows" and not infs:
        warnings.append(f"{package_id}: a Windows package without a usable .inf file; skipped")
        return None
    if family == "linux" and not modules and not firmware:
        warnings.append(f"{package_id}: a Linux package without a readable kernel module (.ko, .ko.xz, .ko.zst, "
                        f".ko.gz) or files under {FIRMWARE_DIR}/; skipped")
        return None
    return Package(id=package_id, family=family, make=group.get("make"), model=group.get("model"),
                   os=group.get("os"), arch=group.get("arch"), files=tuple(files), infs=tuple(infs),
                   modules=tuple(modules), firmware=tuple(firmware))


def _files(directory: Path) -> list[Path]:
    found = []
    for parent, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(parent, n) for n in sorted(names) if not n.startswith(".")]
    return found


def _inf(data: bytes, where: str, warnings: list[str], locale: str) -> Inf | None:
    try:
        inf = parse_inf(data, where, locale)
    except InfError as exc:
        warnings.append(f"{exc}; skipped")
        return None
    warnings += inf.warnings
    if not inf.models:
        warnings.append(f"{where}: installs no devices (no usable [Models] lines); left out of the index")
        return None
    return inf


def write_index(index: StoreIndex, out: Path, key: Ed25519PrivateKey | None) -> str:
    """Write ``out/index.json`` and, given a key, ``out/index.json.sig``; returns the index's sha256 (a pin).

    Without a key no signature is written (a stale one is removed): agents then need the pin.
    """
    data = index.to_json().encode()
    out.mkdir(parents=True, exist_ok=True)
    signature = out / SIGNATURE_NAME
    # Replace, never half-write: an agent reading mid-way sees the old pair or a refused mismatch.
    _replace(out / INDEX_NAME, data)
    if key is not None:
        _replace(signature, sign_manifest(data, key).encode())
    else:
        signature.unlink(missing_ok=True)
    return hashlib.sha256(data).hexdigest()


def load_index(data: bytes, signature: str | None, trusted_keys: Sequence[PublicKey],
               pin: str | None = None) -> StoreIndex:
    """The index from ``index.json``'s bytes, if signed by a trusted key or matching ``pin`` (its sha256).

    SignatureError otherwise: unsigned, signed by an unknown key, changed after signing, or not the pin.
    """
    if pin is None and signature is None:
        raise SignatureError(f"the driver index is not signed (no {SIGNATURE_NAME}) and the task does not pin its "
                             f"sha256: refusing drivers nobody vouches for (sign it: peagent drivers index DIR "
                             "--key KEY)")
    try:
        check_manifest(data, signature, trusted_keys, pin)
    except SignatureError as exc:
        # check_manifest speaks of image manifests; the decision is the same, the words should name the index.
        raise SignatureError(str(exc).replace("manifest.json.sig", SIGNATURE_NAME)
                             .replace("manifest", "driver index")) from None
    return StoreIndex.from_json(data)


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
