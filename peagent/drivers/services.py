"""The kernel service a Windows driver package installs, read from its INF.

A storage controller's driver must already be loading when Windows looks for its boot disk, so
it cannot wait for Plug and Play to install it at first boot (INACCESSIBLE_BOOT_DEVICE). To
register it offline, peagent needs what the INF's install section would have created: the
service's name and its driver file. Windows reads them as follows (WDK, INF AddService
directive), and so does :func:`service_of`:

* the install section a model entry names is decorated per platform: ``<install>.NTamd64`` wins
  over ``<install>.NT`` over ``<install>`` (the first that exists);
* its ``<section>.Services`` holds ``AddService = name, flags, service-install-section``; the
  entry with flag 0x2 (SPSVCINST_ASSOCSERVICE, the device's function driver) is the one wanted,
  else the first;
* the service-install section has ``ServiceType`` (1: kernel driver), ``StartType`` (0: boot),
  ``ErrorControl``, ``LoadOrderGroup`` and ``ServiceBinary = %12%\\name.sys`` (``%12%`` is
  ``%SystemRoot%\\System32\\drivers``).
"""

from __future__ import annotations

from dataclasses import dataclass

from peagent.drivers.infsyntax import Entry, Line, Warn, decode, logical_lines, select_strings, split_sections, tokenize

_PLATFORMS = {"amd64": (".ntamd64", ".nt", ""), "x86": (".ntx86", ".nt", ""), "arm64": (".ntarm64", ".nt", "")}


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    binary: str  # the driver file's name (stornvme.sys)
    group: str | None
    error_control: int


def service_of(data: bytes, install_section: str, arch: str) -> ServiceSpec | None:
    """The function driver's service of ``install_section`` for ``arch``; None when the INF names none."""
    def warn(number: int, message: str) -> None:
        pass  # the index already reported this INF's problems; here only the service matters

    text, _ = decode(data)
    sections = split_sections(logical_lines(text), warn)
    strings = select_strings(sections, 0x0409, warn)
    chosen = next((install_section.lower() + suffix for suffix in _PLATFORMS.get(arch, ("",))
                   if install_section.lower() + suffix in sections), None)
    if chosen is None:
        return None
    adds = [e for e in _entries(sections, chosen + ".services", strings, warn)
            if (e.key or "").lower() == "addservice" and len(e.fields) >= 3]
    if not adds:
        return None
    add = next((e for e in adds if _number(e.fields[1]) & 0x2), adds[0])
    values = {(e.key or "").lower(): e.fields for e in _entries(sections, add.fields[2].lower(), strings, warn)}
    binary = (values.get("servicebinary") or ("",))[0]
    if not binary:
        return None
    group = (values.get("loadordergroup") or (None,))[0]
    return ServiceSpec(name=add.fields[0], binary=binary.replace("/", "\\").rsplit("\\", 1)[-1], group=group or None,
                       error_control=_number((values.get("errorcontrol") or ("1",))[0]))


def _entries(sections: dict[str, list[Line]], name: str, strings: dict[str, str], warn: Warn) -> list[Entry]:
    return [tokenize(line, strings, warn) for line in sections.get(name, [])]


def _number(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        return 0
