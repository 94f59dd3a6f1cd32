"""How a parsed INF and a kernel module's modinfo are written in the driver store index (format 1).

The index (peagent.drivers.store) carries everything the matcher needs, so that the PE never
downloads a package only to find it does not fit: for an INF, the [Version] facts, the
[Manufacturer] lines with their TargetOSVersion decorations (the matcher picks the decorated
Models section that applies, peagent.drivers.rank) and every Models entry; for a module, its
modinfo. The JSON mirrors the dataclasses field by field, with three conversions: a decoration is
written as its text (``NTamd64.10.0...16299``) and parsed again on reading, a date as ISO
``yyyy-mm-dd``, a DriverVer version as ``w.x.y.z``. Reading is strict: a missing or mistyped field
raises KeyError, TypeError or ValueError, which the caller turns into one clear error.
"""

from __future__ import annotations

import datetime
from typing import Any

from peagent.drivers.inf import Inf, Manufacturer, ModelEntry, TargetOS, parse_target_os
from peagent.drivers.kmod import ModInfo


def inf_to_dict(inf: Inf) -> dict[str, Any]:
    return {
        "path": inf.path, "driver_class": inf.driver_class, "class_guid": inf.class_guid, "provider": inf.provider,
        "catalog_files": dict(inf.catalog_files), "date": inf.date.isoformat() if inf.date else None,
        "version": ".".join(map(str, inf.version)) if inf.version else None, "encoding": inf.encoding,
        "manufacturers": [{"name": m.name, "models_section": m.models_section,
                           "decorations": [d.text for d in m.decorations], "line": m.line}
                          for m in inf.manufacturers],
        "models": [{"description": m.description, "install_section": m.install_section,
                    "hardware_id": m.hardware_id, "compatible_ids": list(m.compatible_ids),
                    "decoration": m.decoration.text if m.decoration else None,
                    "models_section": m.models_section, "feature_score": m.feature_score}
                   for m in inf.models],
        "warnings": list(inf.warnings),
    }


def inf_from_dict(d: dict[str, Any]) -> Inf:
    decorations: dict[str, TargetOS] = {}

    def decoration(written: str | None) -> TargetOS | None:
        if written is None:
            return None
        if written not in decorations:  # a few texts repeat over hundreds of model lines
            decorations[written] = parse_target_os(text(written))
        return decorations[written]

    version = d["version"]
    numbers = tuple(int(p) for p in text(version).split(".")) if version is not None else None
    if numbers is not None and len(numbers) != 4:
        raise ValueError(f"expected a DriverVer version w.x.y.z, found {version!r}")
    catalogs = d["catalog_files"]
    if not isinstance(catalogs, dict) or not all(isinstance(v, str) for v in catalogs.values()):
        raise TypeError(f"expected catalog_files as an object of file names, found {catalogs!r}")
    return Inf(
        path=text(d["path"]), driver_class=optional(d["driver_class"]), class_guid=optional(d["class_guid"]),
        provider=optional(d["provider"]), catalog_files=dict(catalogs),
        date=datetime.date.fromisoformat(d["date"]) if d["date"] is not None else None,
        version=numbers,  # type: ignore[arg-type]  # length checked above
        models=tuple(ModelEntry(text(m["description"]), text(m["install_section"]), text(m["hardware_id"]),
                                texts(m["compatible_ids"]), decoration(m["decoration"]), text(m["models_section"]),
                                int(m["feature_score"]))
                     for m in d["models"]),
        warnings=texts(d["warnings"]),
        manufacturers=tuple(Manufacturer(text(m["name"]), text(m["models_section"]),
                                         tuple(decoration(t) for t in m["decorations"]),  # type: ignore[misc]
                                         int(m["line"]))
                            for m in d["manufacturers"]),
        encoding=text(d["encoding"]),
    )


def modinfo_to_dict(info: ModInfo) -> dict[str, Any]:
    return {"name": info.name, "aliases": list(info.aliases), "firmware": list(info.firmware),
            "depends": list(info.depends), "vermagic": info.vermagic, "release": info.release,
            "machine": info.machine, "description": info.description, "license": info.license}


def modinfo_from_dict(d: dict[str, Any]) -> ModInfo:
    return ModInfo(name=text(d["name"]), aliases=texts(d["aliases"]), firmware=texts(d["firmware"]),
                   depends=texts(d["depends"]), vermagic=text(d["vermagic"]), release=text(d["release"]),
                   machine=text(d["machine"]), description=text(d["description"]), license=text(d["license"]))


def text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, found {value!r}"[:120])
    return value


def optional(value: object) -> str | None:
    return None if value is None else text(value)


def texts(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list of strings, found {value!r}"[:120])
    return tuple(text(v) for v in value)
