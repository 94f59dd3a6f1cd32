"""Registry hive fixtures: a minimal empty hive written byte by byte, then filled through hivex.

hivex can open and edit a hive but not create one, so :func:`empty_hive` writes the smallest file
hivex accepts (the regf layout, from libyal's "Windows NT Registry File (REGF) format" and hivex's
lib/handle.c checks):

* a 4096-byte base block: ``regf``, two equal sequence numbers (a cleanly synced hive), a FILETIME,
  version 1.3, type 0 (primary), format 1 (direct memory load), the root cell's offset and the
  hive-bins size (both relative to the first bin, at 0x1000), clustering factor 1, and at 0x1fc a
  checksum: the XOR of the first 508 bytes as little-endian dwords;
* one 4096-byte ``hbin`` (offset 0 from the first bin, size 4096) holding cells, each a signed
  length (negative = in use) and a body padded to 8 bytes: the root ``nk`` (flags 0x2c: hive
  entry, no delete, compressed ASCII name), an ``sk`` the root points to (hivex copies the
  parent's sk into every key it adds, and refuses a parent without one), and one free cell for
  the rest of the bin. hivex writes new cells into bins it appends, so the free cell stays free.

:func:`make_hive` then adds keys and typed values through hivex, from a nested dict.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hivex

REG_NONE, REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ = 0, 1, 2, 3, 4, 7
BIN = 4096
FILETIME = 133_500_000_000_000_000  # 2024-01-19, any fixed time will do

# A self-relative security descriptor: owner BUILTIN\Administrators, group SYSTEM, an empty DACL.
_ADMINS = bytes([1, 2, 0, 0, 0, 0, 0, 5]) + struct.pack("<II", 32, 544)
_SYSTEM = bytes([1, 1, 0, 0, 0, 0, 0, 5]) + struct.pack("<I", 18)
SECURITY_DESCRIPTOR = (struct.pack("<BBHIIII", 1, 0, 0x8004, 20, 20 + len(_ADMINS), 0, 20 + len(_ADMINS) + len(_SYSTEM))
                       + _ADMINS + _SYSTEM + struct.pack("<BBHHH", 2, 0, 8, 0, 0))


def _cell(body: bytes) -> bytes:
    size = (4 + len(body) + 7) & ~7
    return struct.pack("<i", -size) + body.ljust(size - 4, b"\0")


def empty_hive(path: Path, name: str = "ROOT") -> None:
    """Write a valid hive holding only a root key called ``name``."""
    root_off = 0x20  # cell offsets count from the first bin; its 32-byte header comes first
    root_len = len(_cell(b"\0" * (0x4c + len(name))))
    sk_off = root_off + root_len
    nk = struct.pack("<2sHQIIIIIIIIIIIIIIIHH", b"nk", 0x2c, FILETIME, 0, 0xffffffff, 0, 0, 0xffffffff,
                     0xffffffff, 0, 0xffffffff, sk_off, 0xffffffff, 0, 0, 0, 0, 0, len(name), 0) + name.encode("ascii")
    sd = SECURITY_DESCRIPTOR
    # A lone sk links to itself both ways; the root is its one user.
    sk = struct.pack("<2sHIIII", b"sk", 0, sk_off, sk_off, 1, len(sd)) + sd
    cells = _cell(nk) + _cell(sk)
    assert len(_cell(nk)) == root_len
    free = BIN - 0x20 - len(cells)
    hbin = (struct.pack("<4sIIQQI", b"hbin", 0, BIN, 0, FILETIME, 0) + cells + struct.pack("<i", free)).ljust(BIN, b"\0")
    base = bytearray(BIN)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, FILETIME, 1, 3, 0, 1, root_off, BIN, 1)
    base[0x30:0x30 + 2 * len(name)] = name.encode("utf-16-le")[:64]
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(base[:0x1fc])):
        checksum ^= word
    struct.pack_into("<I", base, 0x1fc, checksum)
    path.write_bytes(bytes(base) + hbin)


@dataclass(frozen=True)
class Raw:
    """A value given as its registry type and raw bytes (REG_NONE, REG_BINARY, anything odd)."""

    type: int
    data: bytes


@dataclass(frozen=True)
class Expand:
    """A REG_EXPAND_SZ value."""

    text: str


def encode(value: object) -> tuple[int, bytes]:
    """A Python value as (registry type, bytes): str REG_SZ, int REG_DWORD, list REG_MULTI_SZ, bytes REG_BINARY."""
    if isinstance(value, Raw):
        return value.type, value.data
    if isinstance(value, Expand):
        return REG_EXPAND_SZ, (value.text + "\0").encode("utf-16-le")
    if isinstance(value, bool):
        raise TypeError("say 0 or 1 for a DWORD, not a boolean")
    if isinstance(value, int):
        return REG_DWORD, struct.pack("<I", value)
    if isinstance(value, str):
        return REG_SZ, (value + "\0").encode("utf-16-le")
    if isinstance(value, bytes):
        return REG_BINARY, value
    if isinstance(value, list | tuple):
        return REG_MULTI_SZ, ("".join(s + "\0" for s in value) + "\0").encode("utf-16-le")
    raise TypeError(f"no registry type for {value!r}")


def make_hive(path: Path, tree: Mapping[str, Any], name: str = "ROOT") -> Path:
    """A hive at ``path`` holding ``tree``: a dict value is a subkey, anything else a value (name "" is
    the key's default value)."""
    empty_hive(path, name)
    h = hivex.Hivex(str(path), write=True)
    _add(h, h.root(), tree)
    h.commit(None)
    return path


def _add(h: hivex.Hivex, node: int, tree: Mapping[str, Any]) -> None:
    values = []
    for key, item in tree.items():
        if isinstance(item, Mapping):
            _add(h, h.node_add_child(node, key), item)
        else:
            t, data = encode(item)
            values.append({"key": key, "t": t, "value": data})
    if values:
        h.node_set_values(node, values)


# Product keys: DigitalProductId bytes 52..66 hold the key as a 15-byte little-endian number, 25 base-24
# digits, the "N" of a Windows 8+ key kept as its position in the first digit and bit 3 of byte 66.

KEY_CHARS = "BCDFGHJKMPQRTVWXY2346789"


def encode_product_key(key: str) -> bytes:
    """The 15 key bytes of DigitalProductId for ``key`` (XXXXX-XXXXX-...): the inverse of the decoder."""
    letters = key.replace("-", "")
    assert len(letters) == 25
    if "N" in letters:
        position = letters.index("N")
        digits = [position] + [KEY_CHARS.index(c) for c in letters.replace("N", "", 1)]
    else:
        digits = [KEY_CHARS.index(c) for c in letters]
    number = 0
    for d in digits:
        number = number * 24 + d
    raw = bytearray(number.to_bytes(15, "little"))
    if "N" in letters:
        raw[14] |= 0x08
    return bytes(raw)


def digital_product_id(key: str) -> bytes:
    """A 164-byte DigitalProductId (the XP..10 size) with ``key`` at offset 52 and filler elsewhere."""
    head = struct.pack("<I", 164) + b"\x03\x00\x04\x00" + b"00330-80000-00000-AA442".ljust(44, b"\0")
    return (head + encode_product_key(key)).ljust(164, b"\0")


def unicode_string_sr(text: str) -> bytes:
    """An LSA self-relative UNICODE_STRING (Length, MaximumLength, Offset=8) followed by the UTF-16LE text,
    as SECURITY\\Policy\\PolPrDmN holds the primary domain (or workgroup) name."""
    data = text.encode("utf-16-le")
    return struct.pack("<HHI", len(data), len(data), 8) + data


def sid_bytes(authorities: Sequence[int]) -> bytes:
    """A binary SID S-1-5-<authorities...> (as PolPrDmS holds the primary domain's SID)."""
    return bytes([1, len(authorities), 0, 0, 0, 0, 0, 5]) + b"".join(struct.pack("<I", a) for a in authorities)


# A Windows tree's hives ---------------------------------------------------------------------------------------

NET_CLASS = "{4d36e972-e325-11ce-bfc1-08002be10318}"
GUID_STATIC = "{5B3F8E7A-1C2D-4E5F-8A9B-0C1D2E3F4A51}"
GUID_DHCP = "{9C8D7E6F-5A4B-4C3D-9E2F-1A0B9C8D7E62}"
PNP_STATIC = r"PCI\VEN_8086&DEV_15B8&SUBSYS_07A11028&REV_10\3&11583659&0&FE"
PRODUCT_KEY = "W269N-WFGWX-YVC9B-4J6C9-T83GX"  # Microsoft's published KMS client key for Windows 10 Pro


def system_tree(*, mac_override: str | None = "525400123456", arch: str = "AMD64", current: int = 2,
                setup: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """SYSTEM of a Windows 10 machine: control set ``current`` (another, stale one beside it), a static
    interface with two DNS servers (MAC known only through ``mac_override``) and a DHCP one."""
    control = {
        "ComputerName": {"ComputerName": {"ComputerName": "WS-0042"}},
        "TimeZoneInformation": {"TimeZoneKeyName": "W. Europe Standard Time", "StandardName": "@tzres.dll,-321"},
        "Session Manager": {"Environment": {"PROCESSOR_ARCHITECTURE": arch, "OS": "Windows_NT"}},
        "Class": {NET_CLASS: {
            "0000": {"NetCfgInstanceId": GUID_DHCP, "DriverDesc": "Hyper-V Virtual Ethernet Adapter"},
            "0001": {"NetCfgInstanceId": GUID_STATIC, "DriverDesc": "Intel(R) Ethernet Connection I219-V",
                     **({"NetworkAddress": mac_override} if mac_override else {})},
            "Properties": {"Security": b"\x01\x00"},
        }},
        "Network": {NET_CLASS.upper(): {
            GUID_STATIC: {"Connection": {"Name": "Ethernet", "PnPInstanceId": PNP_STATIC}},
            GUID_DHCP: {"Connection": {"Name": "vEthernet", "PnPInstanceId": r"VMBUS\{F8615163}\1"}},
        }},
    }
    tcpip = {
        "NV Hostname": "ws-0042", "Hostname": "ws-0042", "NV Domain": "corp.example.com", "Domain": "corp.example.com",
        "SearchList": "corp.example.com,example.com",
        "Interfaces": {
            GUID_STATIC: {"EnableDHCP": 0, "IPAddress": ["192.168.10.50"], "SubnetMask": ["255.255.255.0"],
                          "DefaultGateway": ["192.168.10.1"], "NameServer": "192.168.10.2,192.168.10.3",
                          "Domain": ""},
            GUID_DHCP: {"EnableDHCP": 1, "DhcpIPAddress": "10.0.0.5", "DhcpSubnetMask": "255.0.0.0",
                        "NameServer": "", "DhcpNameServer": "10.0.0.1"},
        },
    }
    stale = {"Control": {"ComputerName": {"ComputerName": {"ComputerName": "STALE"}}}}
    other = 1 if current != 1 else 2
    return {
        "Select": {"Current": current, "Default": current, "LastKnownGood": other},
        f"ControlSet{other:03d}": stale,
        f"ControlSet{current:03d}": {"Control": control, "Services": {"Tcpip": {"Parameters": tcpip}}},
        "Setup": dict(setup or {"SystemSetupInProgress": 0}),
    }


def software_tree(*, key: str | None = PRODUCT_KEY, image_state: str = "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE",
                  xp: bool = False) -> dict[str, Any]:
    """SOFTWARE of Windows 10 Pro 22H2 (or, ``xp``, Windows XP Professional) with ``key`` in DigitalProductId."""
    if xp:
        version: dict[str, Any] = {"ProductName": "Microsoft Windows XP", "CurrentVersion": "5.1",
                                   "CurrentBuildNumber": "2600"}
    else:
        version = {"ProductName": "Windows 10 Pro", "CurrentVersion": "6.3", "CurrentMajorVersionNumber": 10,
                   "CurrentMinorVersionNumber": 0, "CurrentBuild": "19045", "CurrentBuildNumber": "19045"}
    version |= {"RegisteredOwner": "IT", "RegisteredOrganization": "Example Corp"}
    if key is not None:
        version["DigitalProductId"] = digital_product_id(key)
    windows: dict[str, Any] = {} if xp else {"CurrentVersion": {"Setup": {"State": {"ImageState": image_state}}}}
    return {"Microsoft": {"Windows NT": {"CurrentVersion": version}, "Windows": windows}}


def security_tree(name: str = "CORP", *, member: bool = True) -> dict[str, Any]:
    """SECURITY\\Policy of a domain member (the domain's name and SID) or of a workgroup machine (no SID)."""
    sid = sid_bytes([21, 1004336348, 1177238915, 682003330]) if member else b""
    return {"Policy": {"PolPrDmN": {"": Raw(REG_NONE, unicode_string_sr(name))},
                       "PolPrDmS": {"": Raw(REG_NONE, sid)},
                       "PolAcDmN": {"": Raw(REG_NONE, unicode_string_sr("WS-0042"))}}}


def windows_tree(root: Path, *, system: Mapping[str, Any] | None = None, software: Mapping[str, Any] | None = None,
                 security: Mapping[str, Any] | None = None, config: str = "Windows/System32/config") -> Path:
    """Write the given hives into ``root``'s config folder (a hive given as None is not written)."""
    folder = root / config
    folder.mkdir(parents=True, exist_ok=True)
    for name, tree in (("SYSTEM", system), ("SOFTWARE", software), ("SECURITY", security)):
        if tree is not None:
            make_hive(folder / name, tree)
    return root
