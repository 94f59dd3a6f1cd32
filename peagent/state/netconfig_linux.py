"""Linux network configuration, read from each stack's own files and written back for another.

A Linux machine's addresses live in the files of whichever network stack configures it, each with
its own format and its own way of saying which interface is meant:

* NetworkManager keyfiles, ``etc/NetworkManager/system-connections/*.nmconnection``: INI;
  ``[ethernet] mac-address``, ``[connection] interface-name``, ``[ipv4] method=auto|manual``,
  ``address1=192.168.10.50/24,192.168.10.1``, ``dns=a;b;``, ``dns-search=``, same for ``[ipv6]``.
* netplan, ``etc/netplan/*.yaml``: ``network.ethernets.<id>`` with ``match.macaddress`` (else the
  id is the interface name), ``dhcp4``, ``addresses``, ``routes`` to ``default`` (or the
  deprecated ``gateway4``), ``nameservers.addresses/search``. Files merge in name order.
* ifupdown, ``etc/network/interfaces`` and what its ``source``/``source-directory`` lines pull in:
  ``iface eth0 inet static`` stanzas with ``address``, ``netmask``, ``gateway``,
  ``dns-nameservers``; by interface *name* only (a ``hwaddress`` line, which sets the MAC the
  interface will have, is taken as its MAC).
* systemd-networkd, ``etc/systemd/network/*.network``: ``[Match] MACAddress=/Name=``,
  ``[Network] Address= Gateway= DNS= Domains= DHCP=``, ``[Address]`` and ``[Route]`` sections.

Each ``parse_*`` (in :mod:`peagent.state.netconfig_linux_read`, re-exported here) gives
:class:`Interface` values keyed by MAC plus notes for what did not map (a bond, a glob match, an
interface known by name only). The ``*_files`` writers are the inverse, for
the new OS's own stack: they return ``{relpath: content}`` (mode from :func:`file_mode`) and
match by MAC, because names differ between the old OS, the PE and the new OS.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import yaml

from peagent.errors import TaskError, describe
from peagent.state.model import Interface
from peagent.state.netconfig_linux_read import (
    IFUPDOWN_MAIN,
    NETPLAN_DIR,
    NETWORKD_DIR,
    NM_DIR,
    Parsed,
    normal_mac,
    parse_ifupdown,
    parse_netplan,
    parse_networkd,
    parse_networkmanager,
    systemd_ini,
)

__all__ = [
    "IFUPDOWN_MAIN",
    "NETPLAN_DIR",
    "NETWORKD_DIR",
    "NM_DIR",
    "LinuxStateError",
    "Parsed",
    "file_mode",
    "ifupdown_files",
    "netplan_files",
    "network_config_v2",
    "networkd_files",
    "networkmanager_files",
    "normal_mac",
    "parse_ifupdown",
    "parse_netplan",
    "parse_networkd",
    "parse_networkmanager",
    "systemd_ini",
]

NM_NAMESPACE = uuid.UUID("5d9d5c3e-8f0a-4b7e-9a51-6c1f0e2d7a43")  # peagent's: uuid5(this, mac) names a keyfile


class LinuxStateError(TaskError, ValueError):
    """A state this Linux image cannot take (a ValueError too, for callers that catch those)."""


# writers ----------------------------------------------------------------------------------------------------------

def file_mode(relpath: str) -> int:
    """The mode a written file needs: NetworkManager and netplan refuse world-readable ones (secrets)."""
    return 0o600 if relpath.endswith((".nmconnection", ".yaml")) else 0o644


def _label(iface: Interface, i: int) -> str:
    if iface.mac:
        return iface.mac.replace(":", "")
    if iface.name:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", iface.name)
    raise LinuxStateError(f"state.interfaces[{i}]", "a mac or a name", "neither")


def networkd_files(interfaces: tuple[Interface, ...] | list[Interface]) -> dict[str, bytes]:
    files = {}
    for i, iface in enumerate(interfaces):
        match = f"MACAddress={iface.mac}" if iface.mac else f"Name={iface.name}"
        lines = ["[Match]", match, "", "[Network]"]
        if iface.dhcp:
            lines.append("DHCP=ipv4")
        lines += [f"Address={a}" for a in iface.addresses]
        lines += [f"Gateway={g}" for g in (iface.gateway, iface.gateway6) if g]
        lines += [f"DNS={d}" for d in iface.dns]
        if iface.search:
            lines.append("Domains=" + " ".join(iface.search))
        files[f"{NETWORKD_DIR}/10-peagent-{_label(iface, i)}.network"] = ("\n".join(lines) + "\n").encode()
    return files


def networkmanager_files(interfaces: tuple[Interface, ...] | list[Interface]) -> dict[str, bytes]:
    files = {}
    for i, iface in enumerate(interfaces):
        label = _label(iface, i)
        lines = ["[connection]", f"id=peagent-{label}", f"uuid={uuid.uuid5(NM_NAMESPACE, iface.mac or label)}",
                 "type=ethernet", "autoconnect=true"]
        lines += ["", "[ethernet]", f"mac-address={iface.mac}"] if iface.mac else [f"interface-name={iface.name}"]
        for family, gateway in (("ipv4", iface.gateway), ("ipv6", iface.gateway6)):
            mine = [a for a in iface.addresses if (":" in a) == (family == "ipv6")]
            method = "manual" if mine else ("auto" if iface.dhcp or family == "ipv6" else "disabled")
            lines += ["", f"[{family}]", f"method={method}"]
            lines += [f"address{n}={a}" + (f",{gateway}" if n == 1 and gateway else "") for n, a in
                      enumerate(mine, 1)]
            dns = [d for d in iface.dns if (":" in d) == (family == "ipv6")]
            if dns:
                lines.append("dns=" + "".join(f"{d};" for d in dns))
            if iface.search and family == "ipv4":
                lines.append("dns-search=" + "".join(f"{s};" for s in iface.search))
        files[f"{NM_DIR}/peagent-{label}.nmconnection"] = ("\n".join(lines) + "\n").encode()
    return files


def network_config_v2(interfaces: tuple[Interface, ...] | list[Interface]) -> dict[str, Any]:
    """cloud-init's network-config version 2 (netplan's schema): match by MAC, set-name when known."""
    ethernets: dict[str, Any] = {}
    for i, iface in enumerate(interfaces):
        entry: dict[str, Any] = {}
        if iface.mac:
            key = f"nic{i}"
            entry["match"] = {"macaddress": iface.mac}
            if iface.name:
                entry["set-name"] = iface.name
        else:
            key = _label(iface, i)  # no match: the id is the interface name
        entry["dhcp4"] = iface.dhcp
        if iface.addresses:
            entry["addresses"] = list(iface.addresses)
        routes = [{"to": "default", "via": g} for g in (iface.gateway, iface.gateway6) if g]
        if routes:
            entry["routes"] = routes
        ns = {k: list(v) for k, v in (("addresses", iface.dns), ("search", iface.search)) if v}
        if ns:
            entry["nameservers"] = ns
        ethernets[key] = entry
    return {"version": 2, "ethernets": ethernets}


def netplan_files(interfaces: tuple[Interface, ...] | list[Interface]) -> dict[str, bytes]:
    doc = {"network": network_config_v2(interfaces)}
    return {f"{NETPLAN_DIR}/10-peagent.yaml": yaml.safe_dump(doc, sort_keys=False).encode()}


def ifupdown_files(interfaces: tuple[Interface, ...] | list[Interface]) -> dict[str, bytes]:
    """``etc/network/interfaces.d/peagent``; ifupdown knows interfaces by name only, so each needs one."""
    unnamed = [i.mac for i in interfaces if not i.name]
    if unnamed:
        raise LinuxStateError("state.interfaces", "an interface name for each interface (ifupdown matches by name "
                             "only; capture one from the old OS or name it in the task)",
                             f"none for {describe(', '.join(str(m) for m in unnamed))}")
    stanzas = []
    for iface in interfaces:
        lines = [f"allow-hotplug {iface.name}"]
        v4 = [a for a in iface.addresses if ":" not in a]
        v6 = [a for a in iface.addresses if ":" in a]
        if v4:
            lines.append(f"iface {iface.name} inet static")
            lines += [f"    address {a}" for a in v4]
            lines += [f"    gateway {iface.gateway}"] if iface.gateway else []
        else:
            lines.append(f"iface {iface.name} inet {'dhcp' if iface.dhcp else 'manual'}")
        lines += [f"    dns-nameservers {' '.join(iface.dns)}"] if iface.dns else []
        lines += [f"    dns-search {' '.join(iface.search)}"] if iface.search else []
        if v6:
            lines += [f"iface {iface.name} inet6 static"] + [f"    address {a}" for a in v6]
            lines += [f"    gateway {iface.gateway6}"] if iface.gateway6 else []
        stanzas.append("\n".join(lines))
    return {"etc/network/interfaces.d/peagent": ("\n\n".join(stanzas) + "\n").encode()}
