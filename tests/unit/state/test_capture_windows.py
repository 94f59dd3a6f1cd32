"""Capturing an old Windows from its hives (built by tests/support/hive.py into tmp trees: no mounts)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from peagent.errors import ImageError
from peagent.state.capture_windows import (
    capture_windows,
    decode_product_key,
    interface_settings,
    normal_mac,
    prefix_length,
    unicode_string_sr,
)
from peagent.state.model import DomainJoin, Interface, MachineState, Secret
from tests.support.hive import (
    GUID_STATIC,
    PNP_STATIC,
    PRODUCT_KEY,
    digital_product_id,
    encode_product_key,
    security_tree,
    software_tree,
    system_tree,
    windows_tree,
)
from tests.support.hive import unicode_string_sr as encode_unicode_string_sr

SOURCE = "Windows on /dev/sda3"
STATIC = Interface(mac="52:54:00:12:34:56", dhcp=False, addresses=("192.168.10.50/24",), gateway="192.168.10.1",
                   dns=("192.168.10.2", "192.168.10.3"), search=("corp.example.com", "example.com"), name=GUID_STATIC)
ADMIN_NOTE = ("admin_password: never captured from Windows (the SAM keeps only password hashes, which an answer file "
              "cannot carry): give state.admin_password")


def tree(tmp_path: Path, **hives: object) -> Path:
    given = {"system": system_tree(), "software": software_tree(), "security": security_tree()}
    given.update(hives)  # type: ignore[arg-type]
    return windows_tree(tmp_path, **given)  # type: ignore[arg-type]


def test_everything_a_domain_member_holds(tmp_path: Path) -> None:
    captured = capture_windows(tree(tmp_path), SOURCE)
    assert captured.os == "windows"
    assert captured.source == "Windows on /dev/sda3 (Windows 10 Pro 10.0 build 19045)"
    assert captured.state == MachineState(
        computer_name="WS-0042",  # from ControlSet002, which Select\Current names: not the stale ControlSet001
        domain=DomainJoin(domain="corp.example.com"), owner="IT", organization="Example Corp",
        product_key=Secret(PRODUCT_KEY), timezone="W. Europe Standard Time", interfaces=(STATIC,),
        dns_domain="corp.example.com")
    assert captured.state.domain is not None and captured.state.domain.password is None
    assert captured.notes == ("1 DHCP interface(s) without a known MAC not captured (DHCP is the default)", ADMIN_NOTE)


def test_a_workgroup_machine(tmp_path: Path) -> None:
    captured = capture_windows(tree(tmp_path, security=security_tree("WORKGROUP", member=False)), SOURCE)
    assert captured.state.domain is None
    assert captured.state.workgroup == "WORKGROUP"


def test_a_domain_member_without_a_dns_suffix_keeps_the_netbios_name(tmp_path: Path) -> None:
    system = system_tree()
    params = system["ControlSet002"]["Services"]["Tcpip"]["Parameters"]
    params.update({"NV Domain": "", "Domain": "", "SearchList": ""})
    captured = capture_windows(tree(tmp_path, system=system), SOURCE)
    assert captured.state.domain == DomainJoin(domain="CORP")
    assert "domain: CORP is the domain's NetBIOS name (no primary DNS suffix was set)" in captured.notes


def test_without_security_the_dns_suffix_is_taken_with_a_note(tmp_path: Path) -> None:
    captured = capture_windows(tree(tmp_path, security=None), SOURCE)
    assert captured.state.domain == DomainJoin(domain="corp.example.com")
    assert any(n.startswith("domain: no readable SECURITY hive; corp.example.com is the primary DNS suffix")
               for n in captured.notes)


def test_an_unreadable_security_hive_falls_back_too(tmp_path: Path) -> None:
    root = tree(tmp_path, security=None)
    (root / "Windows/System32/config/SECURITY").write_bytes(bytes(8192))
    captured = capture_windows(root, SOURCE)
    assert captured.state.domain == DomainJoin(domain="corp.example.com")


def test_without_security_or_suffix_membership_is_unknown(tmp_path: Path) -> None:
    system = system_tree()
    system["ControlSet002"]["Services"]["Tcpip"]["Parameters"].update({"NV Domain": "", "Domain": ""})
    captured = capture_windows(tree(tmp_path, system=system, security=None), SOURCE)
    assert captured.state.domain is None and captured.state.workgroup is None
    assert "domain: no readable SECURITY hive and no primary DNS suffix: membership unknown" in captured.notes


def test_missing_hives_are_notes_not_errors(tmp_path: Path) -> None:
    (tmp_path / "Windows/System32/config").mkdir(parents=True)
    captured = capture_windows(tmp_path, SOURCE)
    assert captured.state == MachineState()
    assert captured.source == SOURCE
    assert captured.notes[:2] == ("Windows/System32/config/SYSTEM is missing: nothing read from it",
                                  "Windows/System32/config/SOFTWARE is missing: nothing read from it")


def test_a_system_file_that_is_not_a_hive_is_an_image_error(tmp_path: Path) -> None:
    root = tree(tmp_path, system=None)
    (root / "Windows/System32/config/SYSTEM").write_bytes(b"\0" * 9000)
    with pytest.raises(ImageError, match="config/SYSTEM"):
        capture_windows(root, SOURCE)


def test_names_are_matched_without_regard_to_case_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    windows_tree(tmp_path, system=system_tree(), software=software_tree(), config="WINDOWS/system32/CONFIG")
    assert capture_windows(tmp_path, SOURCE).state.computer_name == "WS-0042"
    elsewhere = tmp_path / "elsewhere"
    windows_tree(elsewhere, system=system_tree())
    other = tmp_path / "other"
    (other / "Windows/System32/config").mkdir(parents=True)
    os.symlink(elsewhere / "Windows/System32/config/SYSTEM", other / "Windows/System32/config/SYSTEM")
    captured = capture_windows(other, SOURCE)
    assert captured.state.computer_name is None
    assert "Windows/System32/config/SYSTEM is missing: nothing read from it" in captured.notes


def test_an_interface_without_a_known_mac_keeps_its_guid_and_says_which_nic(tmp_path: Path) -> None:
    captured = capture_windows(tree(tmp_path, system=system_tree(mac_override=None)), SOURCE)
    (iface,) = captured.state.interfaces
    assert iface.mac is None and iface.name == GUID_STATIC and iface.addresses == ("192.168.10.50/24",)
    (note,) = [n for n in captured.notes if n.startswith(f"interface {GUID_STATIC}")]
    assert f"(Ethernet, {PNP_STATIC})" in note and "MAC is not in the registry" in note


def test_no_product_key_is_a_note(tmp_path: Path) -> None:
    captured = capture_windows(tree(tmp_path, software=software_tree(key="BBBBB-BBBBB-BBBBB-BBBBB-BBBBB")), SOURCE)
    assert captured.state.product_key is None
    assert any(n.startswith("product_key: none in DigitalProductId") for n in captured.notes)


def test_the_product_key_never_shows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    captured = capture_windows(tree(tmp_path), SOURCE)
    assert captured.state.product_key is not None and captured.state.product_key.reveal() == PRODUCT_KEY
    shown = repr(captured) + str(captured) + str(captured.state.public()) + " ".join(captured.notes) + caplog.text
    assert PRODUCT_KEY not in shown and PRODUCT_KEY.replace("-", "") not in shown


# product keys (pure) -------------------------------------------------------------------------------------------


def test_decode_product_key_golden_vectors() -> None:
    def dpid(number: int, n_flag: bool = False) -> bytes:
        raw = bytearray(number.to_bytes(15, "little"))
        raw[14] |= 0x08 if n_flag else 0
        return bytes(52) + bytes(raw) + bytes(97)

    # 1 = 24 zero digits and a 1: B is digit 0, C digit 1
    assert decode_product_key(dpid(1)) == "BBBBB-BBBBB-BBBBB-BBBBB-BBBBC"
    assert decode_product_key(dpid(23 * 24 + 22)) == "BBBBB-BBBBB-BBBBB-BBBBB-BBB98"
    # Windows 8+: the first digit (2) is where the N goes among the 24 letters that follow
    assert decode_product_key(dpid(2 * 24**24 + 1, n_flag=True)) == "BBNBB-BBBBB-BBBBB-BBBBB-BBBBC"
    assert decode_product_key(dpid(0 * 24**24 + 1, n_flag=True)) == "NBBBB-BBBBB-BBBBB-BBBBB-BBBBC"


@pytest.mark.parametrize("key", [PRODUCT_KEY, "NPPR9-FWDCX-D2C8J-H872K-2YT43", "YKHFT-KW986-GK4PY-FDWYH-7TP9F",
                                 "XQQYW-NFFMW-XJPBH-K8732-CKFFD", "DHXQ2-WRGCD-WGYJY-HHYDH-KKX9B",
                                 "MH37W-N47XK-V7XM9-C7227-GCQG9", "NYYYY-7TK7Q-8PM7D-X4VJC-FQ9Q4",
                                 "BBBBB-BBBBB-BBBBB-BBBBB-BBBNC"])
def test_product_keys_round_trip(key: str) -> None:
    assert decode_product_key(digital_product_id(key)) == key


def test_no_key_in_a_digital_product_id() -> None:
    assert decode_product_key(bytes(164)) is None  # volume licence: all B's
    assert decode_product_key(bytes(52) + bytes(14) + b"\x08" + bytes(97)) is None  # all B's with the N
    assert decode_product_key(bytes(60)) is None  # too short to hold one
    assert decode_product_key(bytes(52) + b"\xff" * 15) is None  # more than 25 digits


def test_encoder_is_the_inverse_layout() -> None:
    assert encode_product_key("BBBBB-BBBBB-BBBBB-BBBBB-BBBBC") == b"\x01" + bytes(14)
    assert encode_product_key("NBBBB-BBBBB-BBBBB-BBBBB-BBBBB")[14] == 0x08


# the other small parsers ---------------------------------------------------------------------------------------


def test_unicode_string_sr() -> None:
    assert unicode_string_sr(encode_unicode_string_sr("CORP")) == "CORP"
    assert unicode_string_sr(b"\x08\x00\x0a\x00\x10\x00\x00\x00" + bytes(8) + "CORP".encode("utf-16-le")) == "CORP"
    pointer = b"\x08\x00\x0a\x00\x00\x40\x12\x00" + "CORP\0".encode("utf-16-le")  # a pointer left where the offset goes
    assert unicode_string_sr(pointer) == "CORP"
    assert unicode_string_sr(b"\x00\x00\x00\x00\x08\x00\x00\x00") is None
    assert unicode_string_sr(b"") is None


def test_masks_and_macs() -> None:
    assert [prefix_length(m) for m in ("255.255.255.0", "255.255.240.0", "0.0.0.0", "255.0.255.0", "x")] == \
        [24, 20, 0, None, None]
    assert normal_mac("525400ABCDEF") == "52:54:00:ab:cd:ef"
    assert normal_mac("52-54-00-AB-CD-EF") == "52:54:00:ab:cd:ef"
    assert normal_mac("5254") is None


def test_interface_settings() -> None:
    values: dict[str, object] = {
        "enabledhcp": 0, "ipaddress": ["10.1.2.3", "10.9.9.9", "0.0.0.0"], "subnetmask": ["255.255.0.0", "bad", "0"],
        "defaultgateway": ["", "10.1.0.1"], "nameserver": "10.1.0.2 10.1.0.3", "domain": "lab.example.com"}
    assert interface_settings(values, None, "{G}", ("example.com",)) == Interface(
        mac=None, dhcp=False, addresses=("10.1.2.3/16",), gateway="10.1.0.1", dns=("10.1.0.2", "10.1.0.3"),
        search=("lab.example.com", "example.com"), name="{G}")
    dhcp = interface_settings({"enabledhcp": 1, "ipaddress": ["10.1.2.3"], "subnetmask": ["255.0.0.0"]}, "m", None)
    assert dhcp == Interface(mac="m", dhcp=True)
    unconfigured = interface_settings({"enabledhcp": 0, "ipaddress": ["0.0.0.0"], "subnetmask": ["0.0.0.0"]}, None, "g")
    assert unconfigured.dhcp and not unconfigured.addresses
