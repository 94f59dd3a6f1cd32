"""Who an old Windows was, read offline from its registry hives before the disk is wiped.

The hives are files in ``Windows/System32/config`` of the mounted tree (peagent.state.hive reads
them; names are matched without regard to case and no symlink is followed). What is read:

SYSTEM, in the control set ``Select\\Current`` names (``CurrentControlSet`` exists only at run time)
    ``Control\\ComputerName\\ComputerName`` ComputerName (the NetBIOS name; ``ActiveComputerName``
    is volatile and not in the file), ``Control\\TimeZoneInformation`` TimeZoneKeyName (Vista+; XP
    has only StandardName, which is localised), ``Services\\Tcpip\\Parameters``: ``NV Hostname``,
    ``NV Domain``/``Domain`` (the primary DNS suffix), SearchList; and per interface
    ``Tcpip\\Parameters\\Interfaces\\{GUID}``: EnableDHCP, IPAddress/SubnetMask (lists),
    DefaultGateway, NameServer (a comma- or space-separated string), Domain.
SOFTWARE ``Microsoft\\Windows NT\\CurrentVersion``
    RegisteredOwner, RegisteredOrganization, ProductName/CurrentVersion/CurrentBuild (for the
    source line), and DigitalProductId: the product key, base-24 encoded (:func:`decode_product_key`).
SECURITY ``Policy``
    The LSA's record of the primary domain: ``PolPrDmN`` (default value: a self-relative
    UNICODE_STRING, Length/MaximumLength/Offset then UTF-16LE; the NetBIOS name of the domain, or
    of the workgroup) and ``PolPrDmS`` (the domain's SID; present and non-empty only for a domain
    member). A live Windows denies even administrators this hive; offline it is a file like the
    others. Without it, a non-empty primary DNS suffix is taken as the domain, with a note
    (a DHCP server or an administrator can set the suffix on a machine in no domain).

**Which interface is which NIC is mostly not knowable offline.** Windows keys TCP/IP settings by
the interface GUID, and does not keep the NIC's burned-in MAC in the registry: the driver reads it
from the hardware at boot. What the hive does hold: ``Control\\Class\\{4d36e972-...}\\NNNN``
(one per network adapter) links the GUID (NetCfgInstanceId) to a driver instance, and its
``NetworkAddress`` is the MAC only when an administrator overrode it ("locally administered
address"); ``Control\\Network\\{4d36e972-...}\\{GUID}\\Connection`` gives the connection's Name
("Ethernet") and PnPInstanceId (``PCI\\VEN_8086&DEV_15B8&...\\3&11583659&0&FE``, which names the
device model and, for PCI, its slot, not the MAC). So a MAC is captured only from a
NetworkAddress override; any other interface with static settings is captured with ``mac=None``,
its GUID as name, and a note naming its connection and PnP id (a human, or a later matcher
against the PE's PCI devices, can tell which NIC it was). DHCP interfaces without a known MAC are
not captured: DHCP is every image's default. IPv6 (Tcpip6) static settings are not read.

Never captured: the Administrator password (the SAM holds only hashes, which an answer file cannot
carry), and domain credentials (no Windows keeps the joining password). A missing hive, key or
value is a note, not an error; a hive file that is not a hive is an ImageError (SECURITY, read
only for the domain, falls back with a note instead).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from pathlib import Path

from peagent.errors import ImageError
from peagent.state.hive import Hive, open_hive, windows_path
from peagent.state.model import Captured, DomainJoin, Interface, MachineState, Secret

CONFIG = "Windows/System32/config"
CURRENT_VERSION = r"Microsoft\Windows NT\CurrentVersion"
NET_CLASS = "{4d36e972-e325-11ce-bfc1-08002be10318}"  # GUID_DEVCLASS_NET
KEY_CHARS = "BCDFGHJKMPQRTVWXY2346789"  # the 24 letters and digits a product key uses
KEY_OFFSET = 52  # the key's 15 bytes in DigitalProductId (XP to 11)


def decode_product_key(digital_product_id: bytes) -> str | None:
    """The product key (``XXXXX-XXXXX-XXXXX-XXXXX-XXXXX``) in a DigitalProductId, or None when it
    holds none (too short, or all B's: volume-licensed and digitally entitled installs zero it).

    Bytes 52..66 are a little-endian number whose 25 base-24 digits index :data:`KEY_CHARS`. Windows
    8 and later keys contain one ``N``, which is not in that alphabet: bit 3 of byte 66 flags such a
    key, the number then holds 24 letters, and its first digit is the position the ``N`` goes to.
    """
    if len(digital_product_id) < KEY_OFFSET + 15:
        return None
    raw = bytearray(digital_product_id[KEY_OFFSET:KEY_OFFSET + 15])
    with_n = bool(raw[14] & 0x08)
    raw[14] &= 0xF7
    number = int.from_bytes(raw, "little")
    digits = []
    for _ in range(25):
        number, digit = divmod(number, 24)
        digits.append(digit)
    if number:
        return None  # more than 25 digits: not a key
    letters = "".join(KEY_CHARS[d] for d in reversed(digits))
    if with_n:
        position = digits[-1]  # the most significant digit
        rest = letters[1:]
        letters = rest[:position] + "N" + rest[position:]
    if set(letters) <= {"B", "N"}:
        return None
    return "-".join(letters[i:i + 5] for i in range(0, 25, 5))


def unicode_string_sr(data: bytes) -> str | None:
    """The text of an LSA self-relative UNICODE_STRING (USHORT Length, USHORT MaximumLength, ULONG Offset
    from the structure's start, then the UTF-16LE text); None when empty or malformed."""
    if len(data) < 8:
        return None
    length, _, offset = struct.unpack_from("<HHI", data)
    if not 8 <= offset <= len(data) - length:
        offset = 8  # some writers leave a pointer, not an offset; the text follows the header
    text = data[offset:offset + length].decode("utf-16-le", "replace").rstrip("\0")
    return text or None


def prefix_length(mask: str) -> int | None:
    """255.255.255.0 -> 24; None for a malformed or non-contiguous mask."""
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        return None


def interface_settings(values: dict[str, object], mac: str | None, name: str | None,
                       search: tuple[str, ...] = ()) -> Interface:
    """One Tcpip\\Parameters\\Interfaces\\{GUID} key's values (decoded, lower-case names) as an Interface."""
    dhcp = values.get("enabledhcp", 1) != 0
    addresses: list[str] = []
    if not dhcp:
        ips, masks = _strings(values.get("ipaddress")), _strings(values.get("subnetmask"))
        for ip, mask in zip(ips, masks, strict=False):
            bits = prefix_length(mask)
            if ip != "0.0.0.0" and bits is not None:
                addresses.append(f"{ip}/{bits}")
    gateways = [g for g in _strings(values.get("defaultgateway")) if g and g != "0.0.0.0"] if not dhcp else []
    dns = tuple(s for s in re.split(r"[,\s]+", str(values.get("nameserver") or "")) if s)
    own = str(values.get("domain") or "")
    return Interface(mac=mac, dhcp=dhcp or not addresses, addresses=tuple(addresses),
                     gateway=gateways[0] if gateways else None, dns=dns,
                     search=tuple(dict.fromkeys(([own] if own else []) + list(search))), name=name)


def normal_mac(text: str) -> str | None:
    """A NetworkAddress override (``525400123456``, maybe with - or :) as ``52:54:00:12:34:56``; None if not one."""
    digits = re.sub(r"[-:.\s]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{12}", digits):
        return None
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def capture_windows(root: Path, source: str) -> Captured:
    """The state of the Windows installed in the tree at ``root`` (mounted, read-only is enough)."""
    notes: list[str] = []
    fields: dict[str, object] = {}
    system = _open(root, "SYSTEM", notes)
    software = _open(root, "SOFTWARE", notes)
    suffix: str | None = None
    if system is not None:
        suffix = _from_system(system, fields, notes)
    if software is not None:
        source = _from_software(software, fields, notes, source)
    _domain(root, suffix, fields, notes)
    notes.append("admin_password: never captured from Windows (the SAM keeps only password hashes, which an "
                 "answer file cannot carry): give state.admin_password")
    return Captured(os="windows", source=source, state=MachineState(**fields), notes=tuple(notes))  # type: ignore[arg-type]


def _open(root: Path, name: str, notes: list[str], *, required: bool = True) -> Hive | None:
    path = windows_path(root, f"{CONFIG}/{name}")
    if path is None:
        notes.append(f"{CONFIG}/{name} is missing: nothing read from it")
        return None
    try:
        return open_hive(path)
    except ImageError:
        if required:
            raise
        notes.append(f"{CONFIG}/{name} is not a readable registry hive")
        return None


def _from_system(system: Hive, fields: dict[str, object], notes: list[str]) -> str | None:
    """Read SYSTEM into fields; returns the primary DNS suffix (the domain guess without SECURITY)."""
    cs = system.control_set()
    if cs is None:
        notes.append("SYSTEM has no control set (no ControlSet00N key): name, time zone and network not read")
        return None
    control, tcpip = f"{cs}\\Control", f"{cs}\\Services\\Tcpip\\Parameters"
    netbios = system.string(rf"{control}\ComputerName\ComputerName", "ComputerName")
    hostname = system.string(tcpip, "NV Hostname") or system.string(tcpip, "Hostname")
    fields["computer_name"] = netbios or hostname
    if fields["computer_name"] is None:
        notes.append("computer_name: SYSTEM holds no ComputerName")
    elif netbios and hostname and netbios.casefold() != hostname.casefold():
        notes.append(f"computer_name: the NetBIOS name {netbios} differs from the DNS host name {hostname}; "
                     "the NetBIOS name is kept")
    zone = system.string(rf"{control}\TimeZoneInformation", "TimeZoneKeyName")
    if zone is None:
        zone = system.string(rf"{control}\TimeZoneInformation", "StandardName")
        if zone is not None:
            notes.append(f"timezone: taken from StandardName ({zone}): Windows before Vista names the zone in "
                         "the installation's language, which may not be a zone name")
    fields["timezone"] = zone
    suffix = system.string(tcpip, "NV Domain") or system.string(tcpip, "Domain")
    fields["dns_domain"] = suffix
    search = tuple(s for s in re.split(r"[,\s]+", system.string(tcpip, "SearchList") or "") if s)
    fields["interfaces"] = tuple(_interfaces(system, cs, tcpip, search, notes))
    return suffix


def _interfaces(system: Hive, cs: str, tcpip: str, search: tuple[str, ...], notes: list[str]) -> list[Interface]:
    adapters: dict[str, str | None] = {}  # GUID (lower case) -> NetworkAddress override
    for name, node in system.subkeys(rf"{cs}\Control\Class\{NET_CLASS}"):
        guid = system.string(node, "NetCfgInstanceId")
        if name.isdigit() and guid:
            override = system.string(node, "NetworkAddress")
            adapters[guid.lower()] = normal_mac(override) if override else None
    found, skipped = [], 0
    for guid, node in system.subkeys(rf"{tcpip}\Interfaces"):
        values = _decoded(system, node)
        mac = adapters.get(guid.lower())
        iface = interface_settings(values, mac, guid, search)
        if iface.dhcp and not iface.dns and mac is None:
            skipped += 1
            continue
        found.append(iface)
        if mac is None:
            connection = rf"{cs}\Control\Network\{NET_CLASS}\{guid}\Connection"
            label = system.string(connection, "Name") or "no connection name"
            pnp = system.string(connection, "PnPInstanceId") or "no PnP id"
            notes.append(f"interface {guid} ({label}, {pnp}): its MAC is not in the registry (Windows reads it "
                         "from the NIC), so its static settings cannot be matched to a NIC by MAC")
    if skipped:
        notes.append(f"{skipped} DHCP interface(s) without a known MAC not captured (DHCP is the default)")
    return found


def _from_software(software: Hive, fields: dict[str, object], notes: list[str], source: str) -> str:
    values = _decoded(software, CURRENT_VERSION)
    if not values:
        notes.append(f"SOFTWARE has no {CURRENT_VERSION}: owner, organisation and product key not read")
        return source
    fields["owner"] = _text(values.get("registeredowner"))
    fields["organization"] = _text(values.get("registeredorganization"))
    product = values.get("digitalproductid")
    key = decode_product_key(product) if isinstance(product, bytes) else None
    if key is not None:
        fields["product_key"] = Secret(key)
    else:
        notes.append("product_key: none in DigitalProductId (volume licence, digital entitlement, or a key kept "
                     "in firmware): not captured")
    name = _text(values.get("productname"))
    major, minor = values.get("currentmajorversionnumber"), values.get("currentminorversionnumber")
    # 10 and 11 keep CurrentVersion at "6.3" for old programs; the numbers tell the truth
    version = f"{major}.{minor}" if isinstance(major, int) else _text(values.get("currentversion"))
    build = _text(values.get("currentbuild")) or _text(values.get("currentbuildnumber"))
    what = " ".join(p for p in (name, version, f"build {build}" if build else None) if p)
    return f"{source} ({what})" if what else source


def _domain(root: Path, suffix: str | None, fields: dict[str, object], notes: list[str]) -> None:
    security = _open(root, "SECURITY", [], required=False)
    if security is None:
        if suffix:
            fields["domain"] = DomainJoin(domain=suffix)
            notes.append(f"domain: no readable SECURITY hive; {suffix} is the primary DNS suffix, taken as the "
                         "domain (a DHCP server or an administrator may have set it on a machine in no domain)")
        else:
            notes.append("domain: no readable SECURITY hive and no primary DNS suffix: membership unknown")
        return
    name_value = security.raw(r"Policy\PolPrDmN", "")
    name = unicode_string_sr(name_value.data) if name_value is not None else None
    sid_value = security.raw(r"Policy\PolPrDmS", "")
    member = sid_value is not None and isinstance(sid_value.value, bytes) and any(sid_value.data)
    if member:
        domain = suffix or name
        if domain is None:
            notes.append("domain: the machine is a domain member, but neither the domain's name nor a DNS suffix "
                         "was found")
            return
        fields["domain"] = DomainJoin(domain=domain)
        if not suffix:
            notes.append(f"domain: {domain} is the domain's NetBIOS name (no primary DNS suffix was set)")
    elif name:
        fields["workgroup"] = name


def _decoded(hive: Hive, key: str | int) -> dict[str, object]:
    """A key's values decoded, by lower-case name (as :func:`interface_settings` takes them)."""
    return {v.name.lower(): v.value for v in hive.values(key).values()}


def _strings(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value]
    if isinstance(value, str) and value:
        return [s for s in re.split(r"[,\s]+", value) if s]
    return []


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
