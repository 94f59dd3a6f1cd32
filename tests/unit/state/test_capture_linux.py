"""Capturing a Linux machine's state from a tree: what is read, what is refused, what stays secret."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from peagent.state.capture_linux import capture_linux
from peagent.state.model import REDACTED, HostKey, Interface, Secret

PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----\n"
PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMb4u+fHnL7kJ3Q root@old"
HASH = "$6$rounds=5000$saltsalt$Ey0bP2Ei0kq1pJ8QH9ZUCq7P9nmn1a1oXG5n8A7Gx6Q1eXY3bHkmJr2t3pZ0x9nT4gk2Yq7H8pA5e6.9Tq3b1"


def write(root: Path, rel: str, data: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    return path


@pytest.fixture()
def old_os(tmp_path: Path) -> Path:
    root = tmp_path / "old"
    write(root, "etc/hostname", "ws0042\n")
    write(root, "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tws0042.corp.example.com ws0042\n::1 localhost\n")
    (root / "usr/share/zoneinfo/Europe").mkdir(parents=True)
    os.symlink("/usr/share/zoneinfo/Europe/Berlin", root / "etc/localtime")
    write(root, "etc/netplan/50-cloud-init.yaml",
          "network:\n  version: 2\n  ethernets:\n    ens3:\n      match: {macaddress: '52:54:00:12:34:56'}\n"
          "      addresses: [192.168.10.50/24]\n      routes: [{to: default, via: 192.168.10.1}]\n")
    write(root, "etc/systemd/network/10-ens3.network",  # the same NIC, differently: netplan wins
          "[Match]\nMACAddress=52:54:00:12:34:56\n[Network]\nDHCP=yes\n")
    write(root, "etc/ssh/ssh_host_ed25519_key", PRIVATE)
    write(root, "etc/ssh/ssh_host_ed25519_key.pub", PUBLIC + "\n")
    write(root, "etc/ssh/ssh_host_rsa_key", PRIVATE)  # no .pub: incomplete
    write(root, "etc/ssh/sshd_config", "PermitRootLogin prohibit-password\n")
    write(root, "etc/shadow", f"root:{HASH}:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n")
    write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    write(root, "root/.ssh/authorized_keys", "# admins\nssh-ed25519 AAAAC3Nza... admin@example\n\n"
                                            'command="uptime" ssh-rsa AAAAB3Nza... monitor\n')
    return root


def test_everything_with_secrets_when_asked(old_os: Path) -> None:
    got = capture_linux(old_os, "Debian on /dev/sda2", keep_ssh_keys=True, keep_root_password=True)
    state = got.state
    assert (got.os, got.source) == ("linux", "Debian on /dev/sda2")
    assert (state.computer_name, state.dns_domain, state.timezone) == ("ws0042", "corp.example.com", "Europe/Berlin")
    assert state.interfaces == (Interface(mac="52:54:00:12:34:56", dhcp=False, addresses=("192.168.10.50/24",),
                                          gateway="192.168.10.1"),)
    assert state.ssh_host_keys == (HostKey(kind="ed25519", private=Secret(PRIVATE), public=PUBLIC),)
    assert state.root_password_hash == Secret(HASH)
    assert state.ssh_authorized_keys == ("ssh-ed25519 AAAAC3Nza... admin@example",
                                         'command="uptime" ssh-rsa AAAAB3Nza... monitor')
    assert got.notes == (
        "network: 52:54:00:12:34:56 is configured by both netplan and systemd-networkd, differently; "
        "netplan's configuration is kept",
        "SSH host keys: rsa is not a complete key pair (etc/ssh/ssh_host_rsa_key[.pub]); not kept",
    )


def test_secrets_never_shown(old_os: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    got = capture_linux(old_os, "Debian", keep_ssh_keys=True, keep_root_password=True)
    logging.getLogger("peagent").info("captured %s %r", got, got)
    shown = str(got) + repr(got) + caplog.text + str(got.state.public()) + " ".join(got.notes)
    assert HASH not in shown and "b3BlbnNzaC1rZXktdjE" not in shown
    assert REDACTED in repr(got)
    assert got.state.root_password_hash is not None
    assert got.state.root_password_hash.reveal() == HASH  # there, for the writer only


def test_no_secrets_unless_asked(old_os: Path) -> None:
    got = capture_linux(old_os, "Debian", keep_ssh_keys=False, keep_root_password=False)
    assert got.state.ssh_host_keys == () and got.state.root_password_hash is None
    assert "SSH host keys: not kept (not asked); the new OS makes new ones" in got.notes
    assert "root password: not kept (not asked)" in got.notes


def test_locked_root_and_timezone_file(old_os: Path) -> None:
    write(old_os, "etc/shadow", "root:!$6$x$y:19700:0:99999:7:::\n")
    write(old_os, "etc/timezone", "America/New_York\n")  # Debian's file wins over the link
    got = capture_linux(old_os, "Debian", keep_ssh_keys=False, keep_root_password=True)
    assert got.state.root_password_hash is None
    assert "root password: root is locked in etc/shadow; nothing to keep" in got.notes
    assert got.state.timezone == "America/New_York"
    write(old_os, "etc/shadow", "root:*:19700:0:99999:7:::\n")
    assert capture_linux(old_os, "D", keep_ssh_keys=False, keep_root_password=True).state.root_password_hash is None


def test_symlinks_out_of_the_tree_are_refused(tmp_path: Path) -> None:
    host = tmp_path / "host"
    write(host, "shadow", f"root:{HASH}:1::::::\n")
    write(host, "hostname", "the-pe\n")
    root = tmp_path / "old"
    (root / "etc").mkdir(parents=True)
    os.symlink("../../host/shadow", root / "etc/shadow")  # climbs out: refused
    os.symlink(str(host / "hostname"), root / "etc/hostname")  # absolute: inside the tree, where it is absent
    os.symlink("/etc/localtime", root / "etc/localtime")  # a loop onto itself
    got = capture_linux(root, "x", keep_ssh_keys=True, keep_root_password=True)
    assert got.state.root_password_hash is None and got.state.computer_name is None
    assert got.state.timezone is None
    assert any("etc/shadow: not read" in n and "above the root" in n for n in got.notes)
    assert "hostname: etc/hostname is missing or empty" in got.notes


def test_an_empty_tree_notes_everything(tmp_path: Path) -> None:
    got = capture_linux(tmp_path, "x", keep_ssh_keys=True, keep_root_password=True)
    assert got.state.set_fields() == []
    assert got.notes == (
        "hostname: etc/hostname is missing or empty",
        "DNS domain: no FQDN in etc/hostname or on etc/hosts's 127.0.1.1 line",
        "time zone: neither etc/timezone nor an etc/localtime link",
        "network: no interface configuration found (netplan, NetworkManager, systemd-networkd, ifupdown); "
        "the new OS's default applies",
        "SSH host keys: none found in etc/ssh",
        "root password: no root entry in etc/shadow",
        "root's SSH keys: none in root/.ssh/authorized_keys",
    )


def test_name_only_configs_merge_by_name(tmp_path: Path) -> None:
    write(tmp_path, "etc/network/interfaces", "iface eth0 inet dhcp\n")
    write(tmp_path, "etc/NetworkManager/system-connections/e.nmconnection",
          "[connection]\ntype=ethernet\ninterface-name=eth0\n[ipv4]\nmethod=auto\n")
    write(tmp_path, "etc/hostname", "box.lab.example\n")
    got = capture_linux(tmp_path, "x", keep_ssh_keys=False, keep_root_password=False)
    assert got.state.interfaces == (Interface(mac=None, dhcp=True, name="eth0"),)
    assert (got.state.computer_name, got.state.dns_domain) == ("box", "lab.example")
    assert any("matched by name 'eth0' only" in n for n in got.notes)


def test_a_name_only_config_meets_its_mac(tmp_path: Path) -> None:
    write(tmp_path, "etc/systemd/network/eth0.network", "[Match]\nName=eth0\n[Network]\nDHCP=yes\n")
    write(tmp_path, "etc/network/interfaces", "iface eth0 inet dhcp\n    hwaddress 52:54:00:00:00:07\n")
    got = capture_linux(tmp_path, "x", keep_ssh_keys=False, keep_root_password=False)
    assert got.state.interfaces == (Interface(mac="52:54:00:00:00:07", dhcp=True, name="eth0"),)
