"""Reading Linux network configuration: each stack's own files to :class:`Interface` values.

The formats, and how each says which interface it means, are described in
:mod:`peagent.state.netconfig_linux` (which re-exports these parsers beside its writers). Every
file is read through :mod:`peagent.state.rootfs`; what does not map (a bond, a glob match, an
interface known by name only) becomes a note in :class:`Parsed`.
"""

from __future__ import annotations

import configparser
import fnmatch
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peagent.state import rootfs
from peagent.state.model import Interface

NM_DIR = "etc/NetworkManager/system-connections"
NETPLAN_DIR = "etc/netplan"
NETWORKD_DIR = "etc/systemd/network"
IFUPDOWN_MAIN = "etc/network/interfaces"
MAX_INCLUDES = 64  # ifupdown files read through source lines, a bound on loops
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


@dataclass(frozen=True)
class Parsed:
    interfaces: tuple[Interface, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class _Draft:  # an Interface while its stanzas and sections are read
    mac: str | None = None
    name: str | None = None
    dhcp: bool = False
    addresses: list[str] = field(default_factory=list)
    gateway: str | None = None
    gateway6: str | None = None
    dns: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)

    def add_gateway(self, value: str) -> None:
        ip = _ip(value)
        if ip is not None and ip.version == 6:
            self.gateway6 = str(ip)
        elif ip is not None:
            self.gateway = str(ip)

    def done(self, where: str, notes: list[str]) -> Interface:
        if self.mac is None:
            notes.append(f"{where}: matched by name {self.name!r} only, not by MAC" if self.name
                         else f"{where}: matches no particular interface (no MAC, no name)")
        return Interface(mac=self.mac, dhcp=self.dhcp, addresses=tuple(dict.fromkeys(self.addresses)),
                         gateway=self.gateway, gateway6=self.gateway6, dns=tuple(dict.fromkeys(self.dns)),
                         search=tuple(dict.fromkeys(self.search)), name=self.name)


def normal_mac(value: str) -> str | None:
    """``52:54:00:12:34:56`` from any common spelling (dashes, upper case, NM's ``82;84;0;...`` bytes)."""
    text = value.strip().strip(";").lower().replace("-", ":")
    if ";" in text:
        try:
            text = ":".join(f"{int(b):02x}" for b in text.split(";"))
        except ValueError:
            return None
    return text if _MAC.match(text) else None


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _cidr(value: str, netmask: str | None = None) -> str | None:
    text = value.strip()
    if netmask and "/" not in text:
        text = f"{text}/{netmask.strip()}"
    try:
        return str(ipaddress.ip_interface(text))
    except ValueError:
        return None


def _config_files(root: Path, folder: str, suffix: str, notes: list[str]) -> Iterator[tuple[str, str]]:
    """(path, text) of each ``*suffix`` file in ``folder`` of the tree that could be read (notes say why not)."""
    for name in rootfs.list_dir(root, folder, notes):
        if name.endswith(suffix):
            text = rootfs.read_text(root, f"{folder}/{name}", notes=notes)
            if text is not None:
                yield f"{folder}/{name}", text


def _is_default(dest: str) -> bool:
    return dest.strip() in ("default", "0.0.0.0/0", "::/0")


# NetworkManager ---------------------------------------------------------------------------------------------------

def parse_networkmanager(root: Path) -> Parsed:
    out: list[Interface] = []
    notes: list[str] = []
    for where, text in _config_files(root, NM_DIR, ".nmconnection", notes):
        ini = configparser.ConfigParser(interpolation=None, strict=False)
        ini.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
        try:
            ini.read_string(text, source=where)
        except configparser.Error as exc:
            notes.append(f"{where}: not a keyfile ({exc.__class__.__name__}); ignored")
            continue
        ctype = ini.get("connection", "type", fallback="")
        if ctype not in ("ethernet", "802-3-ethernet"):
            if ctype != "loopback":
                notes.append(f"{where}: a {ctype or 'typeless'} connection; only Ethernet ones are captured")
            continue
        eth = "ethernet" if ini.has_section("ethernet") else "802-3-ethernet"
        draft = _Draft(mac=normal_mac(ini.get(eth, "mac-address", fallback="")),
                       name=ini.get("connection", "interface-name", fallback=None) or None)
        method4 = ini.get("ipv4", "method", fallback="auto")
        draft.dhcp = method4 == "auto"
        if method4 not in ("auto", "manual", "disabled"):
            notes.append(f"{where}: ipv4 method {method4!r} is not captured")
        for family in ("ipv4", "ipv6"):
            if not ini.has_section(family):
                continue
            for key, value in ini.items(family):
                if re.fullmatch(r"address(es)?\d*", key):
                    _nm_address(value, draft)
                elif key == "gateway":
                    draft.add_gateway(value)
                elif key == "dns":
                    draft.dns += [v for v in (s.strip() for s in value.split(";")) if _ip(v)]
                elif key == "dns-search":
                    draft.search += [v.strip() for v in value.split(";") if v.strip()]
        out.append(draft.done(where, notes))
    return Parsed(tuple(out), tuple(notes))


def _nm_address(value: str, draft: _Draft) -> None:
    text = value.strip().rstrip(";")
    if "/" not in text and text.count(";") >= 1:  # the old form: address;prefix;gateway
        parts = text.split(";")
        text = f"{parts[0]}/{parts[1]}" + (f",{parts[2]}" if len(parts) > 2 else "")
    addr, _, gw = text.partition(",")
    cidr = _cidr(addr)
    if cidr:
        draft.addresses.append(cidr)
    if gw.strip() and gw.strip() not in ("0.0.0.0", "::"):
        draft.add_gateway(gw)


# netplan ----------------------------------------------------------------------------------------------------------

def parse_netplan(root: Path) -> Parsed:
    notes: list[str] = []
    merged: dict[str, Any] = {}
    for where, text in _config_files(root, NETPLAN_DIR, ".yaml", notes):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            notes.append(f"{where}: not YAML ({exc.__class__.__name__}); ignored")
            continue
        if isinstance(data, dict) and isinstance(data.get("network"), dict):
            _merge(merged, data["network"])
    for kind in sorted(set(merged) - {"version", "renderer", "ethernets"}):
        notes.append(f"netplan: {kind} are not captured")
    out = []
    ethernets = merged.get("ethernets")
    for key, cfg in (ethernets or {}).items() if isinstance(ethernets, dict) else ():
        if not isinstance(cfg, dict):
            continue
        where = f"netplan ethernets.{key}"
        match = cfg.get("match") if isinstance(cfg.get("match"), dict) else None
        draft = _Draft(mac=normal_mac(str(match.get("macaddress", ""))) if match else None)
        name = str(match.get("name", "")) if match else str(key)
        if cfg.get("set-name"):
            name = str(cfg["set-name"])
        if name and not any(c in name for c in "*?["):
            draft.name = name
        elif name:
            notes.append(f"{where}: matches names {name!r} (a pattern), not one interface")
        draft.dhcp = cfg.get("dhcp4") in (True, "true", "yes")
        for addr in cfg.get("addresses") or ():
            cidr = _cidr(str(next(iter(addr))) if isinstance(addr, dict) and addr else str(addr))
            if cidr:
                draft.addresses.append(cidr)
        for gkey in ("gateway4", "gateway6"):
            if cfg.get(gkey):
                draft.add_gateway(str(cfg[gkey]))
        for route in cfg.get("routes") or ():
            if isinstance(route, dict) and _is_default(str(route.get("to", ""))) and route.get("via"):
                draft.add_gateway(str(route["via"]))
        ns = cfg.get("nameservers") if isinstance(cfg.get("nameservers"), dict) else {}
        draft.dns += [str(a) for a in ns.get("addresses") or () if _ip(str(a))]
        draft.search += [str(s) for s in ns.get("search") or ()]
        out.append(draft.done(where, notes))
    return Parsed(tuple(out), tuple(notes))


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


# ifupdown ---------------------------------------------------------------------------------------------------------

_STANZAS = ("iface", "mapping", "auto", "source", "source-directory", "source-dir", "rename")


def parse_ifupdown(root: Path) -> Parsed:
    notes: list[str] = []
    lines = _ifupdown_lines(root, IFUPDOWN_MAIN, notes, seen=set())
    drafts: dict[str, _Draft] = {}
    current: _Draft | None = None
    for line in lines:
        words = line.split()
        if words[0] == "iface" and len(words) >= 4:
            name, family, method = words[1], words[2], words[3]
            current = None
            if family not in ("inet", "inet6") or method in ("loopback", "manual"):
                continue
            current = drafts.setdefault(name, _Draft(name=name))
            if family == "inet" and method == "dhcp":
                current.dhcp = True
            elif method not in ("static", "dhcp", "auto"):
                notes.append(f"ifupdown: iface {name} {family} {method} is not captured")
        elif words[0] in _STANZAS or words[0].startswith("allow-"):
            current = None
        elif current is not None and len(words) >= 2:
            _ifupdown_option(current, words[0], words[1:])
    out = []
    for name, draft in drafts.items():
        cidrs = [(a, _cidr(a)) for a in draft.addresses]
        notes += [f"ifupdown iface {name}: address {a!r} is not an address with a prefix; ignored"
                  for a, c in cidrs if c is None]
        draft.addresses = [c for _, c in cidrs if c]
        out.append(draft.done(f"ifupdown iface {name}", notes))
    return Parsed(tuple(out), tuple(notes))


def _ifupdown_option(draft: _Draft, key: str, values: list[str]) -> None:
    if key == "address":
        draft.addresses.append(values[0])  # made a CIDR at the end: a netmask line may follow
    elif key == "netmask" and draft.addresses and "/" not in draft.addresses[-1]:
        draft.addresses[-1] = f"{draft.addresses[-1]}/{values[0]}"
    elif key == "gateway":
        draft.add_gateway(values[0])
    elif key == "dns-nameservers":
        draft.dns += [v for v in values if _ip(v)]
    elif key in ("dns-search", "dns-domain"):
        draft.search += values
    elif key == "hwaddress":
        draft.mac = normal_mac(values[-1])  # "hwaddress ether 52:54:..." or "hwaddress 52:54:..."


def _ifupdown_lines(root: Path, rel: str, notes: list[str], seen: set[str]) -> list[str]:
    """The logical lines of ``rel`` with its includes spliced in where they stand."""
    if rel in seen or len(seen) >= MAX_INCLUDES:
        return []
    seen.add(rel)
    text = rootfs.read_text(root, rel, notes=notes)
    if text is None:
        return []
    out: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "source" and len(words) > 1:
            for inc in _glob(root, _inc_path(words[1])):
                out += _ifupdown_lines(root, inc, notes, seen)
        elif words[0] in ("source-directory", "source-dir") and len(words) > 1:
            folder = _inc_path(words[1])
            for name in rootfs.list_dir(root, folder, notes):
                if re.fullmatch(r"[a-zA-Z0-9_-]+", name):  # run-parts' rule, as ifupdown(5) says
                    out += _ifupdown_lines(root, f"{folder}/{name}", notes, seen)
        else:
            out.append(line)
    return out


def _inc_path(pattern: str) -> str:
    # Relative includes are relative to the directory of the main file, etc/network.
    return pattern.lstrip("/") if pattern.startswith("/") else f"{IFUPDOWN_MAIN.rpartition('/')[0]}/{pattern}"


def _glob(root: Path, pattern: str) -> list[str]:
    folder, _, base = pattern.rpartition("/")
    if not any(c in base for c in "*?["):
        return [pattern]
    return [f"{folder}/{n}" for n in rootfs.list_dir(root, folder) if fnmatch.fnmatchcase(n, base)
            and not n.startswith(".")]


# systemd-networkd -------------------------------------------------------------------------------------------------

def parse_networkd(root: Path) -> Parsed:
    out: list[Interface] = []
    notes: list[str] = []
    for where, text in _config_files(root, NETWORKD_DIR, ".network", notes):
        draft, macs, names = _Draft(), [], []
        for section, entries in systemd_ini(text):
            values: dict[str, list[str]] = {}
            for key, value in entries:
                values.setdefault(key, []).append(value)
            if section == "Route":
                dest = (values.get("Destination") or ["default"])[-1]
                if not _is_default(dest):
                    notes.append(f"{where}: a route to {dest} is not captured")
                elif values.get("Gateway"):
                    draft.add_gateway(values["Gateway"][-1])
                continue
            for key, value in entries:
                if section == "Match" and key in ("MACAddress", "PermanentMACAddress"):
                    macs += [m for m in (normal_mac(v) for v in value.split()) if m]
                elif section == "Match" and key == "Name":
                    names += value.split()
                elif section in ("Network", "Address") and key == "Address":
                    draft.addresses += [c for c in (_cidr(v) for v in value.split()) if c]
                elif section == "Network" and key == "Gateway":
                    draft.add_gateway(value)
                elif section == "Network" and key == "DNS":
                    draft.dns = draft.dns + [v for v in value.split() if _ip(v)] if value else []  # empty: reset
                elif section == "Network" and key == "Domains":
                    draft.search += [v for v in value.split() if not v.startswith("~")]  # ~x: routing only
                elif section == "Network" and key == "DHCP":
                    draft.dhcp = value.strip().lower() in ("yes", "true", "ipv4", "both", "1", "on")
        if len(names) == 1 and not any(c in names[0] for c in "*?["):
            draft.name = names[0]
        elif names:
            notes.append(f"{where}: matches names {' '.join(names)!r}, not one interface")
        for mac in macs or [None]:
            draft.mac = mac
            out.append(draft.done(where, notes))
    return Parsed(tuple(out), tuple(notes))


def systemd_ini(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Sections in file order, each with its (key, value) pairs; repeats stay (systemd.syntax(7))."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append((line[1:-1].strip(), []))
        elif "=" in line and sections:
            key, _, value = line.partition("=")
            sections[-1][1].append((key.strip(), value.strip()))
    return sections
