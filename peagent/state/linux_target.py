"""The new Linux OS told who it is before its first boot: an offline "sysprep" on its mounted tree.

:func:`describe_linux` looks at what the image can do (cloud-init, which network stack, systemd,
sshd); :func:`place_linux` then writes the machine's state in the way that image understands, and
clears what every copy of an image shares but no two machines may (virt-sysprep's list, the
network and identity operations): the machine-id, SSH host keys, DHCP leases, udev's persistent
net rules, NetworkManager connections bound to the golden machine.

* ``etc/machine-id`` becomes ``uninitialized\\n``: systemd then treats the boot as the *first*
  (``ConditionFirstBoot``, presets), makes a new ID and commits it. An empty file would give a new
  ID without first-boot semantics (machine-id(5)).
* With cloud-init (installed, not disabled) the state also goes into a NoCloud seed in
  ``var/lib/cloud/seed/nocloud/`` (meta-data, user-data, network-config v2), and cloud-init's
  per-instance state is cleared as ``cloud-init clean`` does, else a golden image's old instance
  would make it skip per-instance configuration. Without it, the image's own stack's files.
* A first-boot unit reports completion (:mod:`peagent.state.firstboot_linux`).

The report lines name what was written and never a secret.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from peagent.errors import ImageError, describe
from peagent.state import firstboot_linux as fb
from peagent.state import netconfig_linux as net
from peagent.state import rootfs
from peagent.state.capture_linux import root_home
from peagent.state.model import MachineState
from peagent.state.netconfig_linux import LinuxStateError
from peagent.state.timezones import iana_zone

SEED = "var/lib/cloud/seed/nocloud"
NOCLOUD_CFG = "etc/cloud/cloud.cfg.d/99zz-peagent-nocloud.cfg"  # sorts after 99-*, 99_*: read last, wins
WRITERS = {"netplan": net.netplan_files, "networkmanager": net.networkmanager_files,
           "networkd": net.networkd_files, "ifupdown": net.ifupdown_files}
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class LinuxImage:
    name: str  # os-release's PRETTY_NAME
    has_cloud_init: bool
    network_stack: str | None  # "netplan", "networkmanager", "networkd", "ifupdown" or None
    has_systemd: bool
    has_ssh_server: bool
    kernels: tuple[str, ...]  # directory names under lib/modules


def describe_linux(root: Path) -> LinuxImage:
    release = rootfs.read_text(root, "etc/os-release") or rootfs.read_text(root, "usr/lib/os-release") or ""
    fields = {}
    for line in release.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().isidentifier():
            try:
                fields[key.strip()] = " ".join(shlex.split(value))
            except ValueError:
                fields[key.strip()] = value.strip("\"'")
    name = fields.get("PRETTY_NAME") or fields.get("NAME") or "Linux"

    def present(*rels: str) -> bool:
        return any(rootfs.kind(root, rel) is not None for rel in rels)

    if present("etc/netplan", "usr/sbin/netplan"):
        stack: str | None = "netplan"
    elif present("usr/sbin/NetworkManager"):
        stack = "networkmanager"
    elif present("etc/systemd/system/multi-user.target.wants/systemd-networkd.service") or any(
            n.endswith(".network") for n in rootfs.list_dir(root, net.NETWORKD_DIR)):
        stack = "networkd"
    elif present("sbin/ifup", "usr/sbin/ifup"):
        stack = "ifupdown"
    else:
        stack = None
    return LinuxImage(
        name=name,
        has_cloud_init=present("usr/bin/cloud-init") and not present("etc/cloud/cloud-init.disabled"),
        network_stack=stack,
        has_systemd=present("usr/lib/systemd/systemd", "lib/systemd/systemd"),
        has_ssh_server=present("usr/sbin/sshd"),
        kernels=tuple(n for n in rootfs.list_dir(root, "lib/modules")
                      if rootfs.kind(root, f"lib/modules/{n}") == "dir"),
    )


def place_linux(root: Path, image: LinuxImage, state: MachineState, *, deployment_id: str, record: bytes,
                firstboot_env: dict[str, str]) -> list[str]:
    # Everything that can be refused is checked before the first write.
    short, fqdn = _names(state)
    zone = _zone(state.timezone)
    if state.root_password_hash is not None and re.search(r"[:\s]", state.root_password_hash.reveal()):
        raise LinuxStateError("state.root_password_hash", "a crypt(3) hash (no ':' or white space)", "another value")
    fb.env_text(firstboot_env)  # validates the names and values
    use_seed = image.has_cloud_init and not _cloud_network_disabled(root)
    net_files = {} if use_seed else _network_files(image, state)

    report: list[str] = []
    report += _sysprep(root)
    if short is not None:
        rootfs.write_file(root, "etc/hostname", f"{short}\n".encode(), 0o644)
        old = rootfs.read_text(root, "etc/hosts")
        rootfs.write_file(root, "etc/hosts", hosts_text(old, short, fqdn).encode(), None if old else 0o644)
        report.append(f"hostname: {fqdn or short} (etc/hostname, etc/hosts)")
    report += _machine_id(root, image)
    report += _ssh_keys(root, state)
    if zone is not None:
        rootfs.symlink(root, "etc/localtime", f"/usr/share/zoneinfo/{zone}")
        rootfs.write_file(root, "etc/timezone", f"{zone}\n".encode(), 0o644)
        found = rootfs.kind(root, f"usr/share/zoneinfo/{zone}") is not None
        report.append(f"timezone: {zone}" + ("" if found else " (warning: the image has no such zone file)"))
    if state.root_password_hash is not None:
        report.append(_root_password(root, state.root_password_hash.reveal()))
    if state.ssh_authorized_keys:
        report.append(_authorized_keys(root, state.ssh_authorized_keys))
    if image.has_cloud_init:
        report += _cloud_init(root, state, short, fqdn, zone, deployment_id, use_seed)
    for rel, data in net_files.items():
        rootfs.write_file(root, rel, data, net.file_mode(rel))
    if net_files:
        report.append(f"network ({image.network_stack}): {', '.join(net_files)}")
        if image.network_stack == "ifupdown":
            report += _ifupdown_source(root)
    elif not use_seed:
        report.append("network: the image's own configuration (no interfaces in the state)")
    rootfs.write_file(root, fb.RECORD_PATH, record, 0o644)
    report.append(f"deployment record: {fb.RECORD_PATH}")
    if not image.has_systemd:
        report.append("first boot report: not installed (the image has no systemd)")
        return report
    files = fb.files(firstboot_env, ssh_server=image.has_ssh_server, commands=state.first_boot_commands)
    for rel, (data, mode) in files.items():
        rootfs.write_file(root, rel, data, mode)
    units = [fb.UNIT] + ([fb.KEYGEN_UNIT] if image.has_ssh_server else [])
    for unit in units:
        rootfs.symlink(root, f"{fb.WANTS}/{unit}", f"/etc/systemd/system/{unit}")
    report.append(f"first boot: {', '.join(units)} run /{fb.SCRIPT_PATH}; {fb.ENV_PATH} holds "
                  f"{', '.join(firstboot_env) or 'nothing'}"
                  + (f"; {len(state.first_boot_commands)} first-boot command(s) in {fb.COMMANDS_PATH}"
                     if state.first_boot_commands else ""))
    return report


def _names(state: MachineState) -> tuple[str | None, str | None]:
    short = state.computer_name
    if short is None:
        return None, None
    if not _LABEL.match(short):
        raise LinuxStateError("state.computer_name", "a host name of letters, digits and '-' (at most 63)",
                              describe(short))
    domain = state.dns_domain
    if domain is not None and not all(_LABEL.match(p) for p in domain.split(".")):
        raise LinuxStateError("state.dns_domain", "a DNS domain (labels of letters, digits and '-')", describe(domain))
    return short.lower(), f"{short.lower()}.{domain.lower()}" if domain else None


def _zone(name: str | None) -> str | None:
    if name is None:
        return None
    zone = iana_zone(name)
    if zone is None:
        raise LinuxStateError("state.timezone", "a Windows or IANA time zone name", describe(name))
    return zone


def hosts_text(old: str | None, short: str, fqdn: str | None) -> str:
    """etc/hosts with its ``127.0.1.1`` line (Debian's line for the host's own name) set; the rest kept."""
    mine = f"127.0.1.1\t{fqdn} {short}" if fqdn else f"127.0.1.1\t{short}"
    lines = (old if old is not None else "127.0.0.1\tlocalhost\n").splitlines()
    out: list[str] = []
    for line in lines:
        if line.split("#", 1)[0].split()[:1] == ["127.0.1.1"]:
            if mine not in out:
                out.append(mine)
            continue
        out.append(line)
    if mine not in out:
        at = next((i + 1 for i, ln in enumerate(out) if ln.split()[:1] == ["127.0.0.1"]), len(out))
        out.insert(at, mine)
    return "\n".join(out) + "\n"


def _sysprep(root: Path) -> list[str]:
    gone = []
    for rel in ("etc/udev/rules.d/70-persistent-net.rules",):
        if rootfs.remove(root, rel):
            gone.append(rel)
    globs = (("var/lib/dhcp", ""), ("var/lib/dhclient", ""), ("var/lib/NetworkManager", ".lease"),
             (net.NM_DIR, ".nmconnection"))
    for folder, suffix in globs:
        for name in rootfs.list_dir(root, folder):
            if name.endswith(suffix) and rootfs.remove(root, f"{folder}/{name}"):
                gone.append(f"{folder}/{name}")
    for name in rootfs.list_dir(root, "etc/sysconfig/network-scripts"):  # virt-sysprep net-hwaddr
        rel = f"etc/sysconfig/network-scripts/{name}"
        text = rootfs.read_text(root, rel) if name.startswith("ifcfg-") else None
        if text is not None and re.search(r"^\s*HWADDR=", text, re.M):
            kept = "".join(ln for ln in text.splitlines(True) if not ln.lstrip().startswith("HWADDR="))
            rootfs.write_file(root, rel, kept.encode(), None)
            gone.append(f"{rel} HWADDR")
    return [f"removed the image's machine-bound state: {', '.join(gone)}"] if gone else []


def _machine_id(root: Path, image: LinuxImage) -> list[str]:
    lines = []
    if rootfs.kind(root, "var/lib/dbus/machine-id", follow_last=False) == "file":
        rootfs.remove(root, "var/lib/dbus/machine-id")  # a link to /etc/machine-id is right as it is
        lines.append("var/lib/dbus/machine-id removed")
    if image.has_systemd:
        rootfs.write_file(root, "etc/machine-id", b"uninitialized\n", 0o444)
        lines.append("machine-id: uninitialized (systemd makes one at the first boot)")
    elif rootfs.remove(root, "etc/machine-id"):
        lines.append("machine-id: removed (dbus-uuidgen makes one at boot)")
    return lines


def _ssh_keys(root: Path, state: MachineState) -> list[str]:
    for name in rootfs.list_dir(root, "etc/ssh"):
        if name.startswith("ssh_host_"):
            rootfs.remove(root, f"etc/ssh/{name}")
    for key in state.ssh_host_keys:
        private = key.private.reveal()
        rootfs.write_file(root, f"etc/ssh/ssh_host_{key.kind}_key",
                          (private if private.endswith("\n") else private + "\n").encode(), 0o600)
        rootfs.write_file(root, f"etc/ssh/ssh_host_{key.kind}_key.pub", f"{key.public.strip()}\n".encode(), 0o644)
    if state.ssh_host_keys:
        return [f"SSH host keys: {', '.join(k.kind for k in state.ssh_host_keys)} written"]
    return ["SSH host keys: the image's removed; new ones are made at the first boot"]


def _root_password(root: Path, hashed: str) -> str:
    text = rootfs.read_text(root, "etc/shadow")
    lines = (text or "").splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) >= 2:
            fields[1] = hashed
            lines[i] = ":".join(fields)
            rootfs.write_file(root, "etc/shadow", ("\n".join(lines) + "\n").encode(), None)
            return "root password: set in etc/shadow"
    raise ImageError("the image's etc/shadow has no root entry, so root's password cannot be set; use an image "
                     "with a standard etc/shadow or leave state.root_password_hash out")


def _authorized_keys(root: Path, keys: tuple[str, ...]) -> str:
    rel = f"{root_home(root)}/.ssh/authorized_keys"
    rootfs.make_dirs(root, rel.rpartition("/")[0], 0o700)
    old = rootfs.read_text(root, rel) or ""
    have = {ln.strip() for ln in old.splitlines()}
    new = [k.strip() for k in keys if k.strip() not in have]
    text = old + ("\n" if old and not old.endswith("\n") else "") + "".join(k + "\n" for k in new)
    rootfs.write_file(root, rel, text.encode(), 0o600)
    return f"root's SSH keys: {len(new)} added to {rel}"


def _network_files(image: LinuxImage, state: MachineState) -> dict[str, bytes]:
    if not state.interfaces:
        return {}
    if image.network_stack is None:
        if all(i.dhcp and not i.addresses for i in state.interfaces):
            return {}  # DHCP is what an unconfigured image does anyway
        raise LinuxStateError("state.interfaces", "an image with a network stack peagent can configure (cloud-init, "
                              "netplan, NetworkManager, systemd-networkd or ifupdown) for static addresses",
                              f"{image.name} with none of them")
    return WRITERS[image.network_stack](state.interfaces)


def _ifupdown_source(root: Path) -> list[str]:
    text = rootfs.read_text(root, net.IFUPDOWN_MAIN) or ""
    if re.search(r"^\s*source(-directory|-dir)?\s+\S*interfaces\.d", text, re.M):
        return []
    base = text or "auto lo\niface lo inet loopback\n"
    rootfs.write_file(root, net.IFUPDOWN_MAIN, (base.rstrip("\n") + "\n\nsource /etc/network/interfaces.d/*\n")
                      .encode(), None if text else 0o644)
    return [f"{net.IFUPDOWN_MAIN}: added 'source /etc/network/interfaces.d/*'"]


def _cloud_config(root: Path) -> dict[str, object]:
    merged: dict[str, object] = {}
    rels = ["etc/cloud/cloud.cfg"] + [f"etc/cloud/cloud.cfg.d/{n}"
                                      for n in rootfs.list_dir(root, "etc/cloud/cloud.cfg.d") if n.endswith(".cfg")]
    for rel in rels:
        try:
            data = yaml.safe_load(rootfs.read_text(root, rel) or "")
        except yaml.YAMLError:
            continue
        if isinstance(data, dict):
            merged.update(data)
    return merged


def _cloud_network_disabled(root: Path) -> bool:
    network = _cloud_config(root).get("network")
    return isinstance(network, dict) and network.get("config") == "disabled"


def _cloud_init(root: Path, state: MachineState, short: str | None, fqdn: str | None, zone: str | None,
                deployment_id: str, use_seed: bool) -> list[str]:
    # As `cloud-init clean`: every instance's state goes, so this boot is an instance's first (pitfall 14).
    for name in rootfs.list_dir(root, "var/lib/cloud"):
        if name != "seed":
            rootfs.remove(root, f"var/lib/cloud/{name}")
    for old in ("nocloud", "nocloud-net"):
        rootfs.remove(root, f"var/lib/cloud/seed/{old}")
    meta: dict[str, object] = {"instance-id": f"peagent-{deployment_id}"}
    user: dict[str, object] = {}
    if short is not None:
        meta["local-hostname"] = short
        user.update({"preserve_hostname": False, "hostname": short})
        if fqdn:
            user["fqdn"] = fqdn
    if zone is not None:
        user["timezone"] = zone
    if state.ssh_authorized_keys:
        # They are root's: without disable_root false cloud-init rewrites root's copies into "log in as
        # the default user" stubs.
        user.update({"disable_root": False, "ssh_authorized_keys": list(state.ssh_authorized_keys)})
    if state.ssh_host_keys:
        user["ssh_deletekeys"] = False  # cloud-init's default deletes host keys on an instance's first boot
    seed = {"meta-data": yaml.safe_dump(meta, sort_keys=False),
            "user-data": "#cloud-config\n" + yaml.safe_dump(user, sort_keys=False)}
    if state.interfaces and use_seed:
        seed["network-config"] = yaml.safe_dump(net.network_config_v2(state.interfaces), sort_keys=False)
    for name, text in seed.items():
        rootfs.write_file(root, f"{SEED}/{name}", text.encode(), 0o600)
    lines = [f"cloud-init: NoCloud seed in {SEED} ({', '.join(seed)}), instance-id peagent-{deployment_id}; "
             "previous instance state cleared"]
    listed = _cloud_config(root).get("datasource_list")
    if isinstance(listed, list) and "NoCloud" not in listed:
        rootfs.write_file(root, NOCLOUD_CFG,
                          yaml.safe_dump({"datasource_list": ["NoCloud", *[d for d in listed if d != "None"], "None"]},
                                         sort_keys=False).encode(), 0o644)
        lines.append("cloud-init: the image's datasource_list lacked NoCloud; added first "
                     f"({NOCLOUD_CFG})")
    if not use_seed:
        lines.append("cloud-init: the image disables its network configuration; the network goes into the "
                     "image's own stack's files instead")
    return lines
