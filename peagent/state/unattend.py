"""unattend.xml: what a generalized Windows (Vista and later) is told on its first boot.

An image captured with ``sysprep /generalize /oobe`` has forgotten who it is. On its first boot
Windows runs two configuration passes and reads, for each, the ``<settings pass="...">`` of the
answer file: **specialize** (machine identity: name, product key, domain join, static network,
commands run as SYSTEM) and then **oobeSystem** (the Out-Of-Box Experience: administrator
password, which OOBE pages to skip, commands at the first logon). offlineServicing and windowsPE
are run only by Setup or DISM, never by an image laid down from Linux, so nothing is written for
them here. Where the integrator puts the file (``Windows\\Panther\\unattend.xml``) and why is in
the research notes, section 1.

Inside a pass, each ``<component>`` is one Windows component's settings, named with the
processor architecture of the image (``amd64``, ``x86``, ``arm64``): a component whose
architecture does not match is ignored, so a wrong ``arch`` silently does nothing. Setup parses
the file against each component's schema, so the writer is strict about shape:

* Element order. Windows System Image Manager emits settings in alphabetical order, and that is
  the order used here (Shell-Setup: ComputerName, ProductKey, RegisteredOrganization,
  RegisteredOwner, TimeZone; FirstLogonCommands, OOBE, TimeZone, UserAccounts). Microsoft-Windows-
  TCPIP's Interface is the documented exception: its children "must be added in the following
  order: Ipv4Settings, Ipv6Settings, Identifier, UnicastIpAddresses, and then Routes"
  (U/microsoft-windows-tcpip-interfaces-interface). DNS-Client follows Microsoft's own example
  (U/microsoft-windows-dns-client-interfaces-interface-identifier): component-level
  DNSSuffixSearchOrder before Interfaces; in an Interface, Identifier, DNSDomain (the
  connection-specific suffix), DNSServerSearchOrder.
* Lists. An item of a list carries ``wcm:action="add"``, plus ``wcm:keyValue`` where the list is
  keyed (IP addresses: 1..n; DNS servers: their search order).
* Settings unknown to the image's Windows fail the whole pass ("could not parse or process the
  unattend answer file"). The OOBE page switches are the ones that differ between versions: see
  :data:`OOBE_WINDOWS_8_PLUS` (the default) and :data:`OOBE_WINDOWS_7`.

Interfaces are identified by MAC with dashes (``52-54-00-12-34-56``). A DHCP interface without
addresses needs nothing and is left out; the default gateways become routes to ``0.0.0.0/0`` and
``::/0``. The administrator password is hidden as :mod:`peagent.state.password` describes; the
domain-join password has no hidden form and is written as it is. Secrets are revealed only into
the returned bytes: :func:`unattend_summary` describes the same settings for a plan without them.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from peagent.state import timezones
from peagent.state.model import Interface, MachineState
from peagent.state.password import encode_password

NAMESPACE = "urn:schemas-microsoft-com:unattend"
WCM_NAMESPACE = "http://schemas.microsoft.com/WMIConfig/2002/State"
ARCHITECTURES = ("amd64", "x86", "arm64")
ROUTE_METRIC = "10"  # the value in Microsoft's examples; only one default route per family exists
MAX_SETUP_COMMAND = 259  # RunSynchronousCommand/Path (U/microsoft-windows-deployment-...-path)
MAX_LOGON_COMMAND = 1024  # SynchronousCommand/CommandLine (U/...-firstlogoncommands-...-commandline)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # not allowed in XML 1.0 text

# The OOBE pages to skip on Windows 8 / Server 2012 and later (U/microsoft-windows-shell-setup-oobe):
# the licence terms, the OEM registration, the Microsoft-account sign-in, the wireless network,
# the "express settings" page (ProtectYourPC 3 = express settings off). HideLocalAccountScreen
# (the administrator password page; documented for Server) is written only when the state sets
# an administrator password, or the machine would have no usable account.
OOBE_WINDOWS_8_PLUS: Mapping[str, str] = {
    "HideEULAPage": "true",
    "HideLocalAccountScreen": "true",
    "HideOEMRegistrationScreen": "true",
    "HideOnlineAccountScreens": "true",
    "HideWirelessSetupInOOBE": "true",
    "ProtectYourPC": "3",
}
# Windows 7 / 2008 R2 know neither the account switches nor the OEM page, and stop at the network
# location page unless told (NetworkLocation, deprecated since Windows 10). The set Windows 7
# answer files in the wild use; not checked against Vista.
OOBE_WINDOWS_7: Mapping[str, str] = {
    "HideEULAPage": "true",
    "HideWirelessSetupInOOBE": "true",
    "NetworkLocation": "Work",
    "ProtectYourPC": "3",
}


def unattend_xml(state: MachineState, arch: str, *, setup_commands: Sequence[str] = (),
                 logon_commands: Sequence[str] = (), oobe: Mapping[str, str] = OOBE_WINDOWS_8_PLUS) -> bytes:
    """The answer file for state, as UTF-8 bytes with an XML declaration.

    setup_commands run as SYSTEM in specialize (before anyone can log on), logon_commands at the
    first logon. Raises ValueError for an unknown arch or time zone, a static interface without a
    MAC, a malformed address, or a command longer than Windows accepts.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"processorArchitecture: expected one of {', '.join(ARCHITECTURES)}, found {arch!r}")
    zone = windows_timezone(state.timezone)
    static = _static_interfaces(state)
    root = ET.Element("unattend", {"xmlns": NAMESPACE, "xmlns:wcm": WCM_NAMESPACE})
    passes = {
        "specialize": [
            ("Microsoft-Windows-Shell-Setup", _shell_setup_specialize(state, zone)),
            ("Microsoft-Windows-UnattendedJoin", _unattended_join(state)),
            ("Microsoft-Windows-TCPIP", _tcpip(static)),
            ("Microsoft-Windows-DNS-Client", _dns_client(static)),
            ("Microsoft-Windows-Deployment", _deployment(setup_commands)),
        ],
        "oobeSystem": [
            ("Microsoft-Windows-Shell-Setup", _shell_setup_oobe(state, zone, logon_commands, oobe)),
        ],
    }
    for name, components in passes.items():
        present = [(component, children) for component, children in components if children]
        if not present:
            continue
        settings = ET.SubElement(root, "settings", {"pass": name})
        for component, children in present:
            element = ET.SubElement(settings, "component", {
                "name": component, "processorArchitecture": arch, "publicKeyToken": "31bf3856ad364e35",
                "language": "neutral", "versionScope": "nonSxS"})
            element.extend(children)
    ET.indent(root, space="  ")
    # The namespace declarations are plain attributes above, and the wcm: attributes plain names:
    # ElementTree would otherwise invent ns0: prefixes or need its process-wide prefix registry.
    # The result parses back with the right namespaces (the tests check it).
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode").encode() + b"\n"


def unattend_summary(state: MachineState) -> list[str]:
    """What :func:`unattend_xml` would set, one line per setting, for a plan: secrets are shown as <secret>."""
    lines: list[str] = []
    if state.computer_name:
        lines.append(f"ComputerName {state.computer_name}")
    if state.organization:
        lines.append(f"RegisteredOrganization {state.organization}")
    if state.owner:
        lines.append(f"RegisteredOwner {state.owner}")
    if state.product_key is not None:
        lines.append(f"ProductKey {state.product_key}")
    if state.timezone:
        lines.append(f"TimeZone {timezones.windows_zone(state.timezone) or state.timezone + ' (unknown to Windows)'}")
    if state.domain is not None:
        join = state.domain
        line = f"JoinDomain {join.domain}"
        if join.username:
            line += f" as {join.username} (password {join.password or 'none'})"
        lines.append(line + (f" in {join.ou}" if join.ou else ""))
    elif state.workgroup:
        lines.append(f"JoinWorkgroup {state.workgroup}")
    for iface in state.interfaces:
        if iface.dhcp and not iface.addresses:
            continue
        line = f"Interface {iface.windows_id or iface.name or '(no MAC)'} {' '.join(iface.addresses) or 'no address'}"
        gateways = [g for g in (iface.gateway, iface.gateway6) if g]
        line += f" via {' '.join(gateways)}" if gateways else ""
        line += f" dns {' '.join(iface.dns)}" if iface.dns else ""
        lines.append(line + (f" search {' '.join(iface.search)}" if iface.search else ""))
    if state.admin_password is not None:
        lines.append(f"AdministratorPassword {state.admin_password}")
    return lines


def windows_timezone(name: str | None) -> str | None:
    """The Windows zone for a Windows or IANA name (None stays None); ValueError if Windows has none."""
    if name is None:
        return None
    zone = timezones.windows_zone(name)
    if zone is None:
        raise ValueError(f"TimeZone: expected a Windows zone (W. Europe Standard Time) or an IANA zone with a "
                         f"Windows equivalent (Europe/Berlin), found {name!r}")
    return zone


def _el(tag: str, text: str | None = None, *children: ET.Element) -> ET.Element:
    element = ET.Element(tag)
    if text is not None:
        if _NOT_XML.search(text):
            # Named, not shown: the text may be a secret.
            raise ValueError(f"{tag}: expected text without control characters, found one")
        element.text = text
    element.extend(children)
    return element


def _item(tag: str, text: str | None = None, *children: ET.Element, key: int | None = None) -> ET.Element:
    """An item of a list: added (``wcm:action``), and keyed (``wcm:keyValue``) where the list is."""
    element = _el(tag, text, *children)
    element.set("wcm:action", "add")
    if key is not None:
        element.set("wcm:keyValue", str(key))
    return element


def _shell_setup_specialize(state: MachineState, zone: str | None) -> list[ET.Element]:
    values = [("ComputerName", state.computer_name),
              ("ProductKey", state.product_key.reveal() if state.product_key is not None else None),
              ("RegisteredOrganization", state.organization), ("RegisteredOwner", state.owner), ("TimeZone", zone)]
    return [_el(tag, value) for tag, value in values if value]


def _unattended_join(state: MachineState) -> list[ET.Element]:
    join = state.domain
    if join is None:
        return [_el("Identification", None, _el("JoinWorkgroup", state.workgroup))] if state.workgroup else []
    identification = _el("Identification")
    if join.username:
        credentials = ET.SubElement(identification, "Credentials")
        # Credentials/Domain may be left out only when Username carries the domain itself, as
        # user@dns.domain or DOMAIN\\user (U/microsoft-windows-unattendedjoin-identification-credentials-domain).
        if "@" not in join.username and "\\" not in join.username:
            credentials.append(_el("Domain", join.domain))
        if join.password is not None:
            credentials.append(_el("Password", join.password.reveal()))
        credentials.append(_el("Username", join.username))
    identification.append(_el("JoinDomain", join.domain))
    if join.ou:
        identification.append(_el("MachineObjectOU", join.ou))
    return [identification]


def _static_interfaces(state: MachineState) -> list[tuple[Interface, str]]:
    out = []
    for number, iface in enumerate(state.interfaces, 1):
        if iface.dhcp and not iface.addresses:
            continue
        if iface.windows_id is None:
            raise ValueError(f"interface {iface.name or number}: expected a MAC address (unattend.xml identifies "
                             f"interfaces by MAC), found none; give the interface's mac in the task")
        out.append((iface, iface.windows_id))
    return out


def _tcpip(static: list[tuple[Interface, str]]) -> list[ET.Element]:
    interfaces = _el("Interfaces")
    for iface, identifier in static:
        versions = [_ip_version(address, identifier) for address in iface.addresses]
        element = _item("Interface")
        if 4 in versions or not iface.dhcp:
            element.append(_el("Ipv4Settings", None, _el("DhcpEnabled", "false")))
        if 6 in versions:
            element.append(_el("Ipv6Settings", None, _el("DhcpEnabled", "false")))
        element.append(_el("Identifier", identifier))
        if iface.addresses:
            element.append(_el("UnicastIpAddresses", None, *(
                _item("IpAddress", address, key=key)
                for key, address in enumerate(iface.addresses, 1))))
        defaults = [(gateway, prefix) for gateway, prefix in ((iface.gateway, "0.0.0.0/0"), (iface.gateway6, "::/0"))
                    if gateway]
        if defaults:
            element.append(_el("Routes", None, *(
                _item("Route", None, _el("Identifier", str(key)), _el("Metric", ROUTE_METRIC),
                      _el("NextHopAddress", gateway), _el("Prefix", prefix))
                for key, (gateway, prefix) in enumerate(defaults, 1))))
        interfaces.append(element)
    return [interfaces] if len(interfaces) else []


def _ip_version(address: str, identifier: str) -> int:
    try:
        return ipaddress.ip_interface(address).version
    except ValueError:
        raise ValueError(f"interface {identifier}: expected an address like 192.168.10.50/24, "
                         f"found {address!r}") from None


def _dns_client(static: list[tuple[Interface, str]]) -> list[ET.Element]:
    interfaces = _el("Interfaces")
    for iface, identifier in static:
        if not iface.dns and not iface.search:
            continue
        element = _item("Interface", None, _el("Identifier", identifier))
        if iface.search:
            element.append(_el("DNSDomain", iface.search[0]))
        if iface.dns:
            element.append(_el("DNSServerSearchOrder", None, *(
                _item("IpAddress", server, key=key)
                for key, server in enumerate(iface.dns, 1))))
        interfaces.append(element)
    if not len(interfaces):
        return []
    # An interface has one connection-specific suffix; a longer search list is global in Windows.
    # Written only then, because a global list replaces the default search (primary suffix, e.g.
    # the AD domain, then the connection suffixes) instead of adding to it.
    search = list(dict.fromkeys(domain for iface, _ in static for domain in iface.search))
    if len(search) > 1:
        return [_el("DNSSuffixSearchOrder", None, *(
            _item("DomainName", domain, key=key)
            for key, domain in enumerate(search, 1))), interfaces]
    return [interfaces]


def _deployment(commands: Sequence[str]) -> list[ET.Element]:
    if not commands:
        return []
    _check_commands("setup command", commands, MAX_SETUP_COMMAND)
    return [_el("RunSynchronous", None, *(
        _item("RunSynchronousCommand", None, _el("Order", str(order)), _el("Path", command))
        for order, command in enumerate(commands, 1)))]


def _shell_setup_oobe(state: MachineState, zone: str | None, commands: Sequence[str],
                      oobe: Mapping[str, str]) -> list[ET.Element]:
    children = []
    if commands:
        _check_commands("logon command", commands, MAX_LOGON_COMMAND)
        children.append(_el("FirstLogonCommands", None, *(
            _item("SynchronousCommand", None, _el("CommandLine", command), _el("Order", str(order)))
            for order, command in enumerate(commands, 1))))
    pages = [(key, value) for key, value in oobe.items()
             if key != "HideLocalAccountScreen" or state.admin_password is not None]
    if pages:
        children.append(_el("OOBE", None, *(_el(key, value) for key, value in pages)))
    if zone:
        children.append(_el("TimeZone", zone))
    if state.admin_password is not None:
        value = encode_password(state.admin_password, "AdministratorPassword")
        children.append(_el("UserAccounts", None, _el("AdministratorPassword", None,
                                                      _el("Value", value), _el("PlainText", "false"))))
    return children


def _check_commands(what: str, commands: Sequence[str], limit: int) -> None:
    for number, command in enumerate(commands, 1):
        if not command.strip() or len(command) > limit:
            raise ValueError(f"{what} {number}: expected 1 to {limit} characters (Windows' limit), "
                             f"found {len(command.strip())}")
