"""Per-machine values in a task: ``"computer_name": "WS-{serial[-6:]}"``.

One task serves a whole fleet, so names are templates filled from the machine's own identity
(SMBIOS and its NICs) at plan time. The placeholders are:

=============  ==========================================================================
``{serial}``   the system serial number (SMBIOS product_serial)
``{asset_tag}`` the chassis asset tag
``{uuid}``     the SMBIOS UUID
``{mac}``      the first NIC's MAC, 12 hex digits in upper case, no separators
``{model}``    the model (Lenovo's marketing name is its product_version, so that is used there)
``{vendor}``   the manufacturer
=============  ==========================================================================

A placeholder may take a Python-style slice of its value, ``{serial[-6:]}`` or ``{mac[:6]}``.
Values are reduced to letters, digits and hyphens (what a host name may hold: serials have
spaces and slashes in the wild). A placeholder whose value the machine does not have is an error
naming it, rather than a name like ``WS-``. Names are then checked against what the target OS
accepts: :func:`check_computer_name`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from peagent.errors import TaskError, describe
from peagent.inventory import Inventory

NAMES = ("serial", "asset_tag", "uuid", "mac", "model", "vendor")
_PLACEHOLDER = re.compile(r"\{(\w+)(?:\[(-?\d*):(-?\d*)\])?\}")
# Windows refuses these in a computer name (unattend.xml ComputerName reference), and a dot.
_WINDOWS_BAD = set(" {|}~[\\]^':;<=>?@!\"#$%`()+/.,*&")


@dataclass(frozen=True)
class Identity:
    serial: str | None = None
    asset_tag: str | None = None
    uuid: str | None = None
    mac: str | None = None
    model: str | None = None
    vendor: str | None = None

    @classmethod
    def of(cls, inventory: Inventory) -> Identity:
        dmi = inventory.dmi
        lenovo = (dmi.sys_vendor or "").strip().upper() == "LENOVO"
        macs = inventory.macs()
        return cls(serial=dmi.product_serial, asset_tag=dmi.chassis_asset_tag, uuid=dmi.product_uuid,
                   mac=macs[0].replace(":", "").upper() if macs else None,
                   model=(dmi.product_version if lenovo else None) or dmi.product_name, vendor=dmi.sys_vendor)


def check_template(text: str, field: str) -> None:
    """Only known placeholders, and no stray braces: checked when the task is read."""
    for m in _PLACEHOLDER.finditer(text):
        if m.group(1) not in NAMES:
            raise TaskError(field, f"placeholders among {', '.join('{' + n + '}' for n in NAMES)}",
                            f"{{{m.group(1)}}} in {describe(text)}")
    if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
        raise TaskError(field, "placeholders like {serial} or {serial[-6:]}", f"a stray brace in {describe(text)}")


def render(text: str, identity: Identity, field: str) -> str:
    """Fill the placeholders from this machine's identity."""
    def fill(m: re.Match[str]) -> str:
        raw = getattr(identity, m.group(1))
        value = re.sub(r"[^A-Za-z0-9-]", "", raw or "")
        if not value:
            raise TaskError(field, f"a machine with a {m.group(1)} for {{{m.group(1)}}}",
                            "none on this machine (SMBIOS or NICs)")
        if m.group(2) is not None or m.group(3) is not None:
            start = int(m.group(2)) if m.group(2) else None
            stop = int(m.group(3)) if m.group(3) else None
            value = value[start:stop]
        return value

    return _PLACEHOLDER.sub(fill, text)


def check_computer_name(name: str, os_name: str | None, field: str) -> list[str]:
    """Refuse a name the target OS would refuse; returns warnings when the OS is not known yet.

    Windows: 1-15 characters (NetBIOS), none of ``{|}~[\\]^':;<=>?@!"#$%`()+/.,*&`` or space, not only
    digits. Linux: one DNS label, 1-63 letters, digits and hyphens, not starting or ending with a hyphen.
    """
    linux_ok = re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", name) is not None
    bad = sorted(set(name) & _WINDOWS_BAD)
    windows_problem = ("more than 15 characters" if len(name) > 15 else
                       f"the characters {''.join(bad)!r}" if bad else
                       "only digits" if name.isdigit() else "empty" if not name else "")
    if os_name == "windows" and windows_problem:
        raise TaskError(field, "a Windows computer name: 1-15 characters, letters, digits and hyphens, not only "
                        "digits", f"{name!r} ({windows_problem})")
    if os_name == "linux" and not linux_ok:
        raise TaskError(field, "a host name: 1-63 letters, digits and hyphens, not starting or ending with a "
                        "hyphen", describe(name))
    warnings = []
    if os_name is None:
        if windows_problem:
            warnings.append(f"{field} {name!r} would be refused by a Windows image ({windows_problem})")
        if not linux_ok:
            warnings.append(f"{field} {name!r} would be refused by a Linux image (not a host name label)")
    return warnings
