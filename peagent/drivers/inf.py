"""What a Windows driver package's INF file says about the devices it installs.

Windows decides whether a package fits a device from three parts of its INF (WDK "INF Version
section", "INF Manufacturer section", "INF Models section"):

``[Version]``
    ``Signature="$Windows NT$"`` marks the file as an INF at all; ``Class``/``ClassGuid`` the device
    setup class; ``Provider`` the vendor; ``CatalogFile`` (or ``CatalogFile.NTamd64`` and the other
    platform variants) the signed catalog -- without one the package is unsigned;
    ``DriverVer=mm/dd/yyyy,w.x.y.z`` the date and version that break ties between equal matches.

``[Manufacturer]``
    One line per vendor: ``%Mfg% = Models, NTamd64.10.0...16299, NTamd64.6.1``. The first field
    names a Models section; each further field is a *TargetOSVersion* decoration,
    ``NT[arch][.major[.minor[.product type[.suite mask[.build]]]]]``, naming a variant of that
    section, ``[Models.NTamd64.10.0...16299]``, for that platform and OS version or later.

``[Models.<decoration>]``
    ``description = install-section, hardware-id[, compatible-id, ...]``: the ids of the devices
    this package installs, one line per device (a device often has several lines, from the most
    specific id with subsystem and revision down to vendor and device only).

:func:`parse_inf` reads these into an :class:`Inf`; choosing the decoration that applies to a
target and ranking the packages that match a device is :mod:`peagent.drivers.rank`. Bad lines are
skipped with a warning ``FILE:LINE: what``, never raised: one vendor's typo must not cost the
index its other packages. Only a file that is not an INF at all (no [Version] with a Signature)
raises :class:`InfError`, a :class:`~peagent.errors.ImageError` because a driver store is content
delivered with the image.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

from peagent.drivers.infsyntax import (
    Entry,
    Line,
    Warn,
    decode,
    logical_lines,
    select_strings,
    split_sections,
    tokenize,
)
from peagent.errors import ImageError

ARCHES = ("x86", "amd64", "ia64", "arm", "arm64")
SIGNATURES = ("$windows nt$", "$chicago$", "$windows 95$")
DEFAULT_FEATURE_SCORE = 0xFF  # WDK "INF FeatureScore directive": the score when none is given
_GUID = re.compile(r"\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}", re.I)


class InfError(ImageError):
    """A file offered as a driver package's INF is not an INF at all (no [Version] with a Signature)."""

    code = "driver.not_inf"


@dataclass(frozen=True)
class TargetOS:
    """A TargetOSVersion decoration: ``NTamd64.10.0...16299`` is amd64, Windows 10.0 build 16299 or later."""

    text: str  # as written in [Manufacturer], e.g. "NTamd64.10.0...16299"
    arch: str | None  # one of ARCHES; None for a bare "NT" (which this project treats as x86, see rank)
    major: int | None = None
    minor: int | None = None
    product_type: int | None = None  # VER_NT_WORKSTATION 1, DOMAIN_CONTROLLER 2, SERVER 3
    suite: int | None = None  # a VER_SUITE_* mask, all of whose bits the OS must have
    build: int | None = None

    @property
    def version(self) -> tuple[int, int, int]:
        """(major, minor, build), absent parts 0: the lowest OS the decoration applies to."""
        return (self.major or 0, self.minor or 0, self.build or 0)


@dataclass(frozen=True)
class ModelEntry:
    """One device line of a Models section."""

    description: str
    install_section: str
    hardware_id: str  # may be "" when a line lists compatible ids only
    compatible_ids: tuple[str, ...]
    decoration: TargetOS | None  # None: the undecorated Models section
    models_section: str = ""  # the undecorated name from [Manufacturer], groups the decorated variants
    feature_score: int = DEFAULT_FEATURE_SCORE  # FeatureScore of the install section, if it sets one


@dataclass(frozen=True)
class Manufacturer:
    name: str
    models_section: str
    decorations: tuple[TargetOS, ...]
    line: int = 0  # where [Manufacturer] names it, for warnings


@dataclass(frozen=True)
class Inf:
    path: str
    driver_class: str | None
    class_guid: str | None
    provider: str | None
    catalog_files: dict[str, str]  # decoration, lower-case ("" undecorated, "ntamd64", "nt") -> file name
    date: datetime.date | None
    version: tuple[int, int, int, int] | None
    models: tuple[ModelEntry, ...]
    warnings: tuple[str, ...]
    manufacturers: tuple[Manufacturer, ...] = ()
    encoding: str = ""


def parse_target_os(text: str) -> TargetOS:
    """A TargetOSVersion decoration; ValueError saying what is wrong when it is not one."""
    parts = text.strip().split(".")
    head = parts[0].lower()
    if not head.startswith("nt") or len(parts) > 6:
        raise ValueError(f"expected a decoration NT[arch][.major[.minor[.type[.suite[.build]]]]], found {text!r}")
    arch = head[2:] or None
    if arch is not None and arch not in ARCHES:
        raise ValueError(f"unknown architecture {arch!r} in decoration {text!r} (known: {', '.join(ARCHES)})")
    numbers: list[int | None] = []
    # product type and suite mask are hexadecimal flags, the versions and the build decimal
    for position, part in enumerate(parts[1:]):
        part = part.strip()
        hexadecimal = position in (2, 3)
        if not part:
            numbers.append(None)
        elif re.fullmatch(r"(0x)?[0-9a-f]+" if hexadecimal else r"[0-9]+", part, re.I):
            numbers.append(int(part, 16 if hexadecimal else 10))
        else:
            raise ValueError(f"expected a {'hex' if hexadecimal else 'decimal'} number, found {part!r} in {text!r}")
    numbers += [None] * (5 - len(numbers))
    return TargetOS(text.strip(), arch, *numbers)


def parse_driver_ver(value: str) -> tuple[datetime.date, tuple[int, int, int, int] | None]:
    """``mm/dd/yyyy[,w.x.y.z]``; ValueError when the date or version is malformed."""
    date_text, _, version_text = value.partition(",")
    match = re.fullmatch(r"\s*(\d{1,2})/(\d{1,2})/(\d{4})\s*", date_text)
    if not match:
        raise ValueError(f"expected DriverVer=mm/dd/yyyy,w.x.y.z, found {value!r}")
    month, day, year = (int(g) for g in match.groups())
    try:
        date = datetime.date(year, month, day)
    except ValueError as e:  # 02/30, 13/01
        raise ValueError(f"expected DriverVer=mm/dd/yyyy,w.x.y.z with a real date, found {value!r} ({e})") from None
    if not version_text.strip():
        return date, None
    parts = version_text.strip().split(".")
    if len(parts) > 4 or not all(p.isdigit() and int(p) <= 0xFFFF for p in parts):
        raise ValueError(f"expected a version w.x.y.z of numbers up to 65535, found {version_text.strip()!r}")
    numbers = [int(p) for p in parts] + [0] * (4 - len(parts))
    return date, (numbers[0], numbers[1], numbers[2], numbers[3])


def read_inf(path: Path, locale: int | str = 0x0409) -> Inf:
    """Parse the INF file at ``path`` (see :func:`parse_inf`)."""
    return parse_inf(path.read_bytes(), str(path), locale)


def parse_inf(data: bytes, path: str = "<inf>", locale: int | str = 0x0409) -> Inf:
    """An INF file's bytes as an :class:`Inf`, strings resolved for ``locale`` (a LANGID, default en-US).

    Raises :class:`InfError` only when the file is not an INF; anything else wrong is a warning.
    """
    found: list[tuple[int, str]] = []  # (line, what); line 0 for the file as a whole

    def warn(number: int, what: str) -> None:
        found.append((number, what))

    text, encoding = decode(data)
    if "\ufffd" in text:
        warn(0, f"bytes that are not valid {encoding} were replaced by U+FFFD")
    sections = split_sections(logical_lines(text), warn)
    if not any(_entries(sections, "version", {}, lambda n, w: None, key="signature")):
        raise InfError(f"{path}: expected an INF file with a [Version] section giving Signature=\"$Windows NT$\", "
                       "found none; this is not a Windows driver package INF (leave it out of the driver store)")
    strings = select_strings(sections, locale, warn)
    version = {e.key.lower(): (e, ",".join(e.fields)) for e in _entries(sections, "version", strings, warn)
               if e.key}
    signature = version["signature"][1]
    if signature.lower() not in SIGNATURES:
        warn(version["signature"][0].number, f"expected Signature=\"$Windows NT$\", found {signature!r}")

    guid = version.get("classguid", (None, None))[1]
    if guid is not None and not _GUID.fullmatch(guid):
        warn(version["classguid"][0].number, f"expected ClassGuid={{xxxxxxxx-xxxx-...}}, found {guid!r}")
    catalogs = {k.removeprefix("catalogfile").lstrip(".").lower(): v
                for k, (_, v) in version.items() if k.split(".")[0] == "catalogfile" and v}

    date: datetime.date | None = None
    driver_version: tuple[int, int, int, int] | None = None
    if "driverver" not in version:
        warn(0, "[Version] has no DriverVer (required); ties with other packages cannot be broken")
    else:
        try:
            date, driver_version = parse_driver_ver(version["driverver"][1])
        except ValueError as e:
            warn(version["driverver"][0].number, str(e))

    manufacturers = tuple(_manufacturers(sections, strings, warn))
    models = tuple(_models(sections, manufacturers, strings, warn))
    if not manufacturers:
        warn(0, "no [Manufacturer] entries: this INF installs no devices")
    # In file order, each once (a DDInstall section shared by many devices is read once per device).
    ordered = sorted(dict.fromkeys(found), key=lambda f: f[0])
    warnings = tuple(f"{path}:{n}: {w}" if n else f"{path}: {w}" for n, w in ordered)
    return Inf(path=path, driver_class=_get(version, "class"), class_guid=guid, provider=_get(version, "provider"),
               catalog_files=catalogs, date=date, version=driver_version, models=models, warnings=warnings,
               manufacturers=manufacturers, encoding=encoding)


def _get(version: dict[str, tuple[Entry, str]], key: str) -> str | None:
    return version[key][1] if key in version else None


def _entries(sections: dict[str, list[Line]], name: str, strings: dict[str, str], warn: Warn,
             key: str | None = None) -> list[Entry]:
    entries = [tokenize(line, strings, warn) for line in sections.get(name.lower(), [])]
    return [e for e in entries if key is None or (e.key or "").lower() == key]


def _manufacturers(sections: dict[str, list[Line]], strings: dict[str, str], warn: Warn) -> list[Manufacturer]:
    found = []
    for entry in _entries(sections, "manufacturer", strings, warn):
        models = entry.fields[0]
        if not models:
            warn(entry.number, "expected '%Mfg% = models-section[, decoration...]', found no models section")
            continue
        decorations = []
        for text in entry.fields[1:]:
            try:
                decorations.append(parse_target_os(text))
            except ValueError as e:
                warn(entry.number, f"{e}; decoration skipped")
        found.append(Manufacturer(entry.key or models, models, tuple(decorations), entry.number))
    return found


def _models(sections: dict[str, list[Line]], manufacturers: tuple[Manufacturer, ...], strings: dict[str, str],
            warn: Warn) -> list[ModelEntry]:
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    for mfg in manufacturers:
        variants: list[TargetOS | None] = [None, *mfg.decorations]
        for decoration in variants:
            name = mfg.models_section + (f".{decoration.text}" if decoration else "")
            if name.lower() in seen:
                continue  # two manufacturers naming one section: list its devices once
            seen.add(name.lower())
            if name.lower() not in sections:
                if decoration is not None or not mfg.decorations:
                    warn(mfg.line, f"[Manufacturer] names the Models section [{name}], which is not in the file")
                continue
            for entry in _entries(sections, name, strings, warn):
                model = _model(entry, decoration, mfg.models_section, sections, strings, warn)
                if model is not None:
                    entries.append(model)
    return entries


def _model(entry: Entry, decoration: TargetOS | None, models_section: str, sections: dict[str, list[Line]],
           strings: dict[str, str], warn: Warn) -> ModelEntry | None:
    ids = [f for f in entry.fields[1:] if f]
    if entry.key is None or not entry.fields[0] or not ids:
        warn(entry.number, "expected 'description = install-section, hardware-id[, compatible-id...]', "
                           f"found '{','.join(entry.fields)[:60]}'; line skipped")
        return None
    hardware_id = entry.fields[1] if len(entry.fields) > 1 else ""
    compatible = tuple(f for f in entry.fields[2:] if f)
    install = entry.fields[0]
    return ModelEntry(entry.key, install, hardware_id, compatible, decoration, models_section,
                      _feature_score(install, decoration, sections, strings, warn))


def _feature_score(install: str, decoration: TargetOS | None, sections: dict[str, list[Line]],
                   strings: dict[str, str], warn: Warn) -> int:
    # Windows reads the DDInstall section decorated for the platform, else .NT, else the plain one.
    arch = decoration.arch if decoration and decoration.arch else "x86"
    for name in (f"{install}.nt{arch}", f"{install}.nt", install):
        if name.lower() in sections:
            for entry in _entries(sections, name, strings, warn, key="featurescore"):
                value = entry.fields[0]
                if re.fullmatch(r"(0x)?[0-9a-f]{1,2}", value, re.I):
                    return int(value, 16)
                warn(entry.number, f"expected FeatureScore=0x00..0xFF, found {value!r}; default 0xFF used")
            break
    return DEFAULT_FEATURE_SCORE
