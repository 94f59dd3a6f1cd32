"""Each Linux network stack's files, as the stacks write them, parsed to Interfaces and written back."""

from __future__ import annotations

import configparser
import uuid
from pathlib import Path

import pytest
import yaml

from peagent.state import netconfig_linux as net
from peagent.state.model import Interface
from peagent.state.netconfig_linux import LinuxStateError

STATIC = Interface(mac="52:54:00:12:34:56", dhcp=False, addresses=("192.168.10.50/24", "2001:db8::5/64"),
                   gateway="192.168.10.1", gateway6="2001:db8::1", dns=("192.168.10.2", "2001:db8::53"),
                   search=("corp.example.com", "example.com"), name="eth0")
DHCP = Interface(mac="52:54:00:ab:cd:ef", dhcp=True)


def write(root: Path, rel: str, data: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    return path


def put(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        write(root, rel, data.decode())


# NetworkManager ----------------------------------------------------------------------------------------------------

NM_STATIC = """\
[connection]
id=Wired connection 1
uuid=0f5b0c41-6a1f-3b5a-9f7e-1c4b0b6a2f11
type=ethernet
interface-name=enp1s0
autoconnect-priority=-999
timestamp=1700000000

[ethernet]
mac-address=52:54:00:12:34:56

[ipv4]
address1=192.168.10.50/24,192.168.10.1
dns=192.168.10.2;192.168.10.3;
dns-search=corp.example.com;
method=manual

[ipv6]
addr-gen-mode=stable-privacy
address1=2001:db8::5/64
gateway=2001:db8::1
method=manual

[proxy]
"""


def test_nm_static_keyfile(tmp_path: Path) -> None:
    write(tmp_path, f"{net.NM_DIR}/Wired connection 1.nmconnection", NM_STATIC)
    write(tmp_path, f"{net.NM_DIR}/home.nmconnection", "[connection]\nid=home\ntype=wifi\n[wifi]\nssid=x\n")
    write(tmp_path, f"{net.NM_DIR}/dhcp.nmconnection",
          "[connection]\nid=d\ntype=802-3-ethernet\n\n[802-3-ethernet]\nmac-address=82;84;0;171;205;239;\n")
    parsed = net.parse_networkmanager(tmp_path)
    assert parsed.interfaces == (
        Interface(mac="52:54:00:12:34:56", dhcp=False, addresses=("192.168.10.50/24", "2001:db8::5/64"),
                  gateway="192.168.10.1", gateway6="2001:db8::1", dns=("192.168.10.2", "192.168.10.3"),
                  search=("corp.example.com",), name="enp1s0"),
        Interface(mac="52:54:00:ab:cd:ef", dhcp=True),  # method absent: auto
    )
    assert parsed.notes == (f"{net.NM_DIR}/home.nmconnection: a wifi connection; only Ethernet ones are captured",)


def test_nm_name_only_and_old_address_form(tmp_path: Path) -> None:
    write(tmp_path, f"{net.NM_DIR}/eth1.nmconnection",
          "[connection]\nid=eth1\ntype=ethernet\ninterface-name=eth1\n\n[ipv4]\nmethod=manual\n"
          "addresses1=10.0.0.5;16;10.0.0.1;\n")
    parsed = net.parse_networkmanager(tmp_path)
    assert parsed.interfaces == (Interface(mac=None, dhcp=False, addresses=("10.0.0.5/16",), gateway="10.0.0.1",
                                           name="eth1"),)
    assert parsed.notes == (f"{net.NM_DIR}/eth1.nmconnection: matched by name 'eth1' only, not by MAC",)


def test_nm_garbage_is_a_note(tmp_path: Path) -> None:
    write(tmp_path, f"{net.NM_DIR}/bad.nmconnection", "no section header\n")
    parsed = net.parse_networkmanager(tmp_path)
    assert parsed.interfaces == ()
    assert "not a keyfile" in parsed.notes[0]


def test_nm_writer_round_trip_and_configparser(tmp_path: Path) -> None:
    files = net.networkmanager_files([STATIC, DHCP])
    assert sorted(files) == [f"{net.NM_DIR}/peagent-525400123456.nmconnection",
                             f"{net.NM_DIR}/peagent-525400abcdef.nmconnection"]
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(files[f"{net.NM_DIR}/peagent-525400123456.nmconnection"].decode())
    assert dict(ini["connection"]) == {"id": "peagent-525400123456",
                                       "uuid": str(uuid.uuid5(net.NM_NAMESPACE, "52:54:00:12:34:56")),
                                       "type": "ethernet", "autoconnect": "true"}
    assert dict(ini["ethernet"]) == {"mac-address": "52:54:00:12:34:56"}
    assert dict(ini["ipv4"]) == {"method": "manual", "address1": "192.168.10.50/24,192.168.10.1",
                                 "dns": "192.168.10.2;", "dns-search": "corp.example.com;example.com;"}
    assert dict(ini["ipv6"]) == {"method": "manual", "address1": "2001:db8::5/64,2001:db8::1", "dns": "2001:db8::53;"}
    put(tmp_path, files)
    back = net.parse_networkmanager(tmp_path)
    assert back.interfaces == (STATIC.__class__(**{**STATIC.__dict__, "name": None}), DHCP)
    assert net.file_mode(next(iter(files))) == 0o600


def test_nm_writer_uuid_is_stable_per_mac() -> None:
    a = net.networkmanager_files([DHCP])
    assert a == net.networkmanager_files([DHCP])
    assert a != net.networkmanager_files([Interface(mac="52:54:00:ab:cd:e0")])


# netplan ------------------------------------------------------------------------------------------------------------

NETPLAN = """\
# This file is generated from information provided by the datasource.
network:
    version: 2
    renderer: networkd
    ethernets:
        ens3:
            match:
                macaddress: "52:54:00:12:34:56"
            set-name: ens3
            addresses:
              - 192.168.10.50/24
              - "2001:db8::5/64":
                  lifetime: 0
            routes:
              - to: default
                via: 192.168.10.1
              - to: 10.9.0.0/16
                via: 192.168.10.254
            gateway6: 2001:db8::1
            nameservers:
                addresses: [192.168.10.2]
                search: [corp.example.com]
        enp2s0:
            dhcp4: yes
    bonds:
        bond0:
            interfaces: [enp2s0]
"""


def test_netplan(tmp_path: Path) -> None:
    write(tmp_path, "etc/netplan/50-cloud-init.yaml", NETPLAN)
    write(tmp_path, "etc/netplan/60-override.yaml", "network:\n  ethernets:\n    enp2s0:\n      dhcp4: false\n"
                                                    "      addresses: [10.1.0.9/8]\n      gateway4: 10.0.0.1\n")
    write(tmp_path, "etc/netplan/99-broken.yaml", "network: [\n")
    write(tmp_path, "etc/netplan/readme.txt", "not yaml: {")
    parsed = net.parse_netplan(tmp_path)
    assert parsed.interfaces == (
        Interface(mac="52:54:00:12:34:56", dhcp=False, addresses=("192.168.10.50/24", "2001:db8::5/64"),
                  gateway="192.168.10.1", gateway6="2001:db8::1", dns=("192.168.10.2",),
                  search=("corp.example.com",), name="ens3"),
        Interface(mac=None, dhcp=False, addresses=("10.1.0.9/8",), gateway="10.0.0.1", name="enp2s0"),
    )
    assert parsed.notes == ("etc/netplan/99-broken.yaml: not YAML (ParserError); ignored",
                            "netplan: bonds are not captured",
                            "netplan ethernets.enp2s0: matched by name 'enp2s0' only, not by MAC")


def test_netplan_glob_name(tmp_path: Path) -> None:
    write(tmp_path, "etc/netplan/01.yaml", "network:\n  ethernets:\n    all:\n      match: {name: 'en*'}\n"
                                           "      dhcp4: true\n")
    parsed = net.parse_netplan(tmp_path)
    assert parsed.interfaces == (Interface(mac=None, dhcp=True),)
    assert parsed.notes[0] == "netplan ethernets.all: matches names 'en*' (a pattern), not one interface"


def test_netplan_writer_round_trip(tmp_path: Path) -> None:
    files = net.netplan_files([STATIC, DHCP])
    assert list(files) == ["etc/netplan/10-peagent.yaml"]
    doc = yaml.safe_load(files["etc/netplan/10-peagent.yaml"])
    assert doc == {"network": {"version": 2, "ethernets": {
        "nic0": {"match": {"macaddress": "52:54:00:12:34:56"}, "set-name": "eth0", "dhcp4": False,
                 "addresses": ["192.168.10.50/24", "2001:db8::5/64"],
                 "routes": [{"to": "default", "via": "192.168.10.1"}, {"to": "default", "via": "2001:db8::1"}],
                 "nameservers": {"addresses": ["192.168.10.2", "2001:db8::53"],
                                 "search": ["corp.example.com", "example.com"]}},
        "nic1": {"match": {"macaddress": "52:54:00:ab:cd:ef"}, "dhcp4": True}}}}
    assert b"gateway4" not in files["etc/netplan/10-peagent.yaml"]
    put(tmp_path, files)
    assert net.parse_netplan(tmp_path) == net.Parsed((STATIC, DHCP), ())
    assert net.file_mode("etc/netplan/10-peagent.yaml") == 0o600


def test_network_config_v2_by_name_without_mac() -> None:
    v2 = net.network_config_v2([Interface(mac=None, name="eth1", dhcp=True)])
    assert v2 == {"version": 2, "ethernets": {"eth1": {"dhcp4": True}}}
    with pytest.raises(LinuxStateError, match="neither"):
        net.network_config_v2([Interface(mac=None)])


# ifupdown -----------------------------------------------------------------------------------------------------------

IFUPDOWN = """\
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
allow-hotplug ens3
iface ens3 inet static
    address 192.168.10.50
    netmask 255.255.255.0
    gateway 192.168.10.1
    # dns-* options are implemented by the resolvconf package, if installed
    dns-nameservers 192.168.10.2 192.168.10.3
    dns-search corp.example.com
iface ens3 inet6 static
    address 2001:db8::5/64
    gateway 2001:db8::1

source-directory extra
"""


def test_ifupdown_with_includes(tmp_path: Path) -> None:
    write(tmp_path, "etc/network/interfaces", IFUPDOWN)
    write(tmp_path, "etc/network/interfaces.d/ens4", "auto ens4\niface ens4 inet dhcp\n"
                                                     "    hwaddress ether 52:54:00:AB:CD:EF\n")
    write(tmp_path, "etc/network/interfaces.d/.hidden", "iface nope inet dhcp\n")
    write(tmp_path, "etc/network/extra/bond", "iface bond0 inet manual\n    bond-slaves ens5\n"
                                              "iface ens6 inet static\n    address nonsense\n    netmask 24\n")
    write(tmp_path, "etc/network/extra/skip.conf", "iface nope inet dhcp\n")  # not a run-parts name
    write(tmp_path, "etc/network/interfaces.d/loop", "source /etc/network/interfaces\n")  # a loop: read once
    parsed = net.parse_ifupdown(tmp_path)
    assert parsed.interfaces == (
        Interface(mac="52:54:00:ab:cd:ef", dhcp=True, name="ens4"),
        Interface(mac=None, dhcp=False, addresses=("192.168.10.50/24", "2001:db8::5/64"), gateway="192.168.10.1",
                  gateway6="2001:db8::1", dns=("192.168.10.2", "192.168.10.3"), search=("corp.example.com",),
                  name="ens3"),
        Interface(mac=None, dhcp=False, name="ens6"),
    )
    assert parsed.notes == (
        "ifupdown iface ens3: matched by name 'ens3' only, not by MAC",
        "ifupdown iface ens6: address 'nonsense/24' is not an address with a prefix; ignored",
        "ifupdown iface ens6: matched by name 'ens6' only, not by MAC",
    )


def test_ifupdown_include_outside_is_confined(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(tmp_path, "etc/network/interfaces.d/host", "iface hostnic inet dhcp\n")  # the "host's" file
    write(root, "etc/network/interfaces", f"source {tmp_path}/etc/network/interfaces.d/*\nsource ../../../x\n")
    parsed = net.parse_ifupdown(root)
    assert parsed.interfaces == ()
    assert any("above the root" in n for n in parsed.notes)


def test_ifupdown_writer_round_trip(tmp_path: Path) -> None:
    named = Interface(mac="52:54:00:ab:cd:ef", dhcp=True, name="ens4")
    files = net.ifupdown_files([STATIC, named])
    assert files == {"etc/network/interfaces.d/peagent": (
        b"allow-hotplug eth0\niface eth0 inet static\n    address 192.168.10.50/24\n    gateway 192.168.10.1\n"
        b"    dns-nameservers 192.168.10.2 2001:db8::53\n    dns-search corp.example.com example.com\n"
        b"iface eth0 inet6 static\n    address 2001:db8::5/64\n    gateway 2001:db8::1\n\n"
        b"allow-hotplug ens4\niface ens4 inet dhcp\n")}
    write(tmp_path, "etc/network/interfaces", "source /etc/network/interfaces.d/*\n")
    put(tmp_path, files)
    back = net.parse_ifupdown(tmp_path).interfaces
    assert back == (Interface(**{**STATIC.__dict__, "mac": None}), Interface(mac=None, dhcp=True, name="ens4"))


def test_ifupdown_writer_needs_names() -> None:
    with pytest.raises(LinuxStateError) as exc:
        net.ifupdown_files([DHCP])
    assert "ifupdown matches by name" in str(exc.value) and "52:54:00:ab:cd:ef" in str(exc.value)
    assert isinstance(exc.value, ValueError)


# systemd-networkd ---------------------------------------------------------------------------------------------------

NETWORKD = """\
# static
[Match]
MACAddress=52:54:00:12:34:56

[Network]
Address=192.168.10.50/24
Gateway=192.168.10.1
DNS=192.168.10.2
DNS=192.168.10.3
Domains=corp.example.com ~internal

[Address]
Address=2001:db8::5/64

[Route]
Gateway=2001:db8::1

[Route]
Destination=10.9.0.0/16
Gateway=192.168.10.254
"""


def test_networkd(tmp_path: Path) -> None:
    write(tmp_path, "etc/systemd/network/20-wired.network", NETWORKD)
    write(tmp_path, "etc/systemd/network/80-dhcp.network", "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n")
    write(tmp_path, "etc/systemd/network/30-eth1.network", "[Match]\nName=eth1\n[Network]\nDHCP=ipv4\n")
    write(tmp_path, "etc/systemd/network/10-x.netdev", "[NetDev]\nName=br0\nKind=bridge\n")
    parsed = net.parse_networkd(tmp_path)
    assert parsed.interfaces == (
        Interface(mac="52:54:00:12:34:56", dhcp=False, addresses=("192.168.10.50/24", "2001:db8::5/64"),
                  gateway="192.168.10.1", gateway6="2001:db8::1", dns=("192.168.10.2", "192.168.10.3"),
                  search=("corp.example.com",)),
        Interface(mac=None, dhcp=True, name="eth1"),
        Interface(mac=None, dhcp=True),
    )
    assert parsed.notes == (
        "etc/systemd/network/20-wired.network: a route to 10.9.0.0/16 is not captured",
        "etc/systemd/network/30-eth1.network: matched by name 'eth1' only, not by MAC",
        "etc/systemd/network/80-dhcp.network: matches names 'en*', not one interface",
        "etc/systemd/network/80-dhcp.network: matches no particular interface (no MAC, no name)",
    )


def test_networkd_writer_round_trip(tmp_path: Path) -> None:
    files = net.networkd_files([STATIC, DHCP])
    assert files[f"{net.NETWORKD_DIR}/10-peagent-525400123456.network"] == (
        b"[Match]\nMACAddress=52:54:00:12:34:56\n\n[Network]\nAddress=192.168.10.50/24\nAddress=2001:db8::5/64\n"
        b"Gateway=192.168.10.1\nGateway=2001:db8::1\nDNS=192.168.10.2\nDNS=2001:db8::53\n"
        b"Domains=corp.example.com example.com\n")
    assert files[f"{net.NETWORKD_DIR}/10-peagent-525400abcdef.network"] == (
        b"[Match]\nMACAddress=52:54:00:ab:cd:ef\n\n[Network]\nDHCP=ipv4\n")
    put(tmp_path, files)
    assert net.parse_networkd(tmp_path) == net.Parsed((Interface(**{**STATIC.__dict__, "name": None}), DHCP), ())
    assert net.file_mode(next(iter(files))) == 0o644


def test_systemd_ini_keeps_repeats() -> None:
    assert net.systemd_ini("; c\n[A]\nx=1\nx=2\n[B]\ny = a \\\n b\n[A]\nz=\n") == [
        ("A", [("x", "1"), ("x", "2")]), ("B", [("y", "a   b")]), ("A", [("z", "")])]


@pytest.mark.parametrize(("text", "mac"), [("52:54:00:12:34:56", "52:54:00:12:34:56"),
                                           ("52-54-00-AB-CD-EF", "52:54:00:ab:cd:ef"),
                                           ("82;84;0;171;205;239;", "52:54:00:ab:cd:ef"),
                                           ("52:54:00", None), ("zz:54:00:12:34:56", None)])
def test_normal_mac(text: str, mac: str | None) -> None:
    assert net.normal_mac(text) == mac
