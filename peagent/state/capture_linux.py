"""What a Linux machine says about itself, read out of its root filesystem before the wipe.

Everything comes from files, read through :mod:`peagent.state.rootfs` (confined to the tree, small
regular files only), never by running the old OS's programs:

* the hostname from ``etc/hostname``; the DNS domain from the FQDN on ``etc/hosts``'s ``127.0.1.1``
  line (Debian's convention for a machine without a static address), or from an FQDN in
  ``etc/hostname``;
* the time zone from ``etc/timezone`` (Debian), else the ``etc/localtime`` symlink's target after
  ``zoneinfo/`` (what ``timedatectl`` writes);
* the network through :mod:`peagent.state.netconfig_linux`, for each stack whose files are there,
  merged by MAC (the first of netplan, NetworkManager, networkd, ifupdown wins a conflict, noted);
* the SSH host keys (``etc/ssh/ssh_host_<kind>_key`` and ``.pub``) and root's password hash from
  ``etc/shadow`` only when the task asks to keep them: both are :class:`Secret` values;
* root's ``~/.ssh/authorized_keys`` (public keys: always captured).

Each thing that is absent or refused becomes a note in :class:`Captured`, so the plan shows what
the new OS will not inherit.
"""

from __future__ import annotations

import re
from pathlib import Path

from peagent.state import netconfig_linux as net
from peagent.state import rootfs
from peagent.state.model import Captured, HostKey, Interface, MachineState, Secret
from peagent.state.timezones import iana_zone

KEY_LIMIT = 64 * 1024  # bytes: an SSH key file (an RSA-16384 private key is ~12 KiB)
STACKS = (("netplan", net.parse_netplan), ("NetworkManager", net.parse_networkmanager),
          ("systemd-networkd", net.parse_networkd), ("ifupdown", net.parse_ifupdown))
_HOST_KEY = re.compile(r"^ssh_host_([a-z0-9]+)_key$")


def capture_linux(root: Path, source: str, *, keep_ssh_keys: bool, keep_root_password: bool) -> Captured:
    notes: list[str] = []
    name, domain = hostname(root, notes)
    state = MachineState(
        computer_name=name,
        dns_domain=domain,
        timezone=timezone(root, notes),
        interfaces=interfaces(root, notes),
        ssh_host_keys=host_keys(root, notes) if keep_ssh_keys else (),
        root_password_hash=root_hash(root, notes) if keep_root_password else None,
        ssh_authorized_keys=authorized_keys(root, notes),
    )
    if not keep_ssh_keys:
        notes.append("SSH host keys: not kept (not asked); the new OS makes new ones")
    if not keep_root_password:
        notes.append("root password: not kept (not asked)")
    return Captured(os="linux", source=source, state=state, notes=tuple(notes))


def hostname(root: Path, notes: list[str]) -> tuple[str | None, str | None]:
    """(short host name, DNS domain) from etc/hostname and etc/hosts."""
    text = rootfs.read_text(root, "etc/hostname", notes=notes)
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.strip().startswith("#")]
    full = lines[0] if lines else None
    if full is None:
        notes.append("hostname: etc/hostname is missing or empty")
    short, _, domain = (full or "").partition(".")
    hosts = rootfs.read_text(root, "etc/hosts", notes=notes) or ""
    for line in hosts.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2 or words[0] != "127.0.1.1":
            continue
        fqdns = [w for w in words[1:] if "." in w and (not short or w.split(".", 1)[0] == short)]
        if fqdns:
            domain = domain or fqdns[0].split(".", 1)[1]
            short = short or fqdns[0].split(".", 1)[0]
        break
    if not domain:
        notes.append("DNS domain: no FQDN in etc/hostname or on etc/hosts's 127.0.1.1 line")
    return short or None, domain or None


def timezone(root: Path, notes: list[str]) -> str | None:
    text = rootfs.read_text(root, "etc/timezone", notes=notes)
    zone = text.strip() if text and text.strip() else None
    if zone is None:
        target = rootfs.readlink(root, "etc/localtime")
        if target is not None and "zoneinfo/" in target:
            zone = target.split("zoneinfo/", 1)[1]
            zone = zone.removeprefix("posix/").removeprefix("right/")  # tzdata's variant trees, same names
        elif rootfs.kind(root, "etc/localtime") == "file":
            notes.append("time zone: etc/localtime is a copy, not a link; its zone name cannot be told")
            return None
    if zone is None:
        notes.append("time zone: neither etc/timezone nor an etc/localtime link")
        return None
    if iana_zone(zone) is None:
        notes.append(f"time zone: {zone!r} is not a zone peagent knows; not kept")
        return None
    return zone


def interfaces(root: Path, notes: list[str]) -> tuple[Interface, ...]:
    found: list[tuple[str, Interface]] = []
    for stack, parse in STACKS:
        parsed = parse(root)
        notes += [f"network ({stack}): {n}" for n in parsed.notes]
        found += [(stack, i) for i in parsed.interfaces]
    merged = merge_interfaces(found, notes)
    if not merged:
        notes.append("network: no interface configuration found (netplan, NetworkManager, systemd-networkd, "
                     "ifupdown); the new OS's default applies")
    if rootfs.list_dir(root, "etc/sysconfig/network-scripts"):
        notes.append("network: etc/sysconfig/network-scripts (ifcfg files) is not read")
    return merged


def merge_interfaces(found: list[tuple[str, Interface]], notes: list[str]) -> tuple[Interface, ...]:
    """One interface per MAC (or per name when there is no MAC); the first found wins, conflicts noted."""
    kept: dict[str, tuple[str, Interface]] = {}
    for stack, iface in found:
        if iface.name == "lo":
            continue
        key = iface.mac or f"name:{iface.name}"
        same = kept.get(key) or next((v for v in kept.values() if iface.mac is None and iface.name
                                      and v[1].name == iface.name), None)
        by_name = kept.get(f"name:{iface.name}") if iface.mac and iface.name else None
        if by_name is not None and _config(by_name[1]) == _config(iface):
            del kept[f"name:{iface.name}"]  # the same interface, now with its MAC
            same = None
        if same is None:
            kept[key] = (stack, iface)
        elif _config(same[1]) != _config(iface):
            notes.append(f"network: {iface.mac or iface.name} is configured by both {same[0]} and {stack}, "
                         f"differently; {same[0]}'s configuration is kept")
    return tuple(iface for _, iface in kept.values())


def _config(i: Interface) -> tuple[object, ...]:
    return (i.dhcp, i.addresses, i.gateway, i.gateway6, i.dns, i.search)


def host_keys(root: Path, notes: list[str]) -> tuple[HostKey, ...]:
    keys = []
    for name in rootfs.list_dir(root, "etc/ssh", notes):
        found = _HOST_KEY.match(name)
        if not found:
            continue
        kind = found.group(1)
        if kind == "dsa":
            notes.append("SSH host keys: the DSA key is not kept (OpenSSH no longer accepts DSA)")
            continue
        private = rootfs.read_text(root, f"etc/ssh/{name}", KEY_LIMIT, notes)
        public = rootfs.read_text(root, f"etc/ssh/{name}.pub", KEY_LIMIT, notes)
        if not private or not public or "PRIVATE KEY" not in private:
            notes.append(f"SSH host keys: {kind} is not a complete key pair (etc/ssh/{name}[.pub]); not kept")
            continue
        keys.append(HostKey(kind=kind, private=Secret(private), public=public.strip()))
    if not keys:
        notes.append("SSH host keys: none found in etc/ssh")
    return tuple(keys)


def root_hash(root: Path, notes: list[str]) -> Secret | None:
    text = rootfs.read_text(root, "etc/shadow", notes=notes)
    for line in (text or "").splitlines():
        fields = line.split(":")
        if fields[0] != "root" or len(fields) < 2:
            continue
        hashed = fields[1]
        if hashed in ("", "*", "x") or hashed.startswith("!"):
            what = "has no password" if hashed == "" else "is locked"
            notes.append(f"root password: root {what} in etc/shadow; nothing to keep")
            return None
        return Secret(hashed)
    notes.append("root password: no root entry in etc/shadow")
    return None


def root_home(root: Path) -> str:
    """root's home directory inside the tree, from etc/passwd (``root`` when it does not say)."""
    for line in (rootfs.read_text(root, "etc/passwd") or "").splitlines():
        fields = line.split(":")
        if fields[0] == "root" and len(fields) >= 6 and fields[5].startswith("/") and fields[5] != "/":
            return fields[5].strip("/")
    return "root"


def authorized_keys(root: Path, notes: list[str]) -> tuple[str, ...]:
    rel = f"{root_home(root)}/.ssh/authorized_keys"
    text = rootfs.read_text(root, rel, notes=notes)
    keys = tuple(ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.strip().startswith("#"))
    if not keys:
        notes.append(f"root's SSH keys: none in {rel}")
    return keys
