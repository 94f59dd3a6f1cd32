"""Hives read and edited through hivex: fixtures built byte by byte (tests/support/hive.py), then filled."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import hivex
import pytest

from peagent.errors import ImageError
from peagent.state.hive import (
    REG_BINARY,
    REG_DWORD,
    REG_DWORD_BIG_ENDIAN,
    REG_EXPAND_SZ,
    REG_MULTI_SZ,
    REG_NONE,
    REG_QWORD,
    REG_SZ,
    decode,
    open_hive,
    windows_path,
)
from tests.support.hive import Expand, Raw, empty_hive, make_hive

TREE = {
    "Select": {"Current": 2, "Default": 1},
    "ControlSet001": {"Control": {"ComputerName": {"ComputerName": {"ComputerName": "OLD"}}}},
    "ControlSet002": {"Control": {"ComputerName": {"ComputerName": {"ComputerName": "WS-0042"}}}},
    "Values": {
        "Text": "hello", "Path": Expand(r"%SystemRoot%\inf"), "List": ["a", "b c"], "Number": 0xDEADBEEF,
        "Blob": b"\x00\x01\x02", "": Raw(REG_NONE, b"\x08\x00"), "Big": Raw(REG_DWORD_BIG_ENDIAN, b"\x00\x00\x01\x02"),
    },
    "Größe": {"Ähnlich": "yes"},
}


@pytest.fixture
def hive_file(tmp_path: Path) -> Path:
    return make_hive(tmp_path / "SYSTEM", TREE)


# decode (pure) -------------------------------------------------------------------------------------------------


def test_decode_each_type() -> None:
    assert decode(REG_SZ, "WS-0042\0".encode("utf-16-le")) == "WS-0042"
    assert decode(REG_SZ, "W. Europe\0junk after".encode("utf-16-le")) == "W. Europe"  # a known Windows quirk
    assert decode(REG_SZ, "no terminator".encode("utf-16-le")) == "no terminator"
    assert decode(REG_EXPAND_SZ, "%SystemRoot%\0".encode("utf-16-le")) == "%SystemRoot%"
    assert decode(REG_MULTI_SZ, "10.0.0.5\x0010.0.0.6\0\0".encode("utf-16-le")) == ["10.0.0.5", "10.0.0.6"]
    assert decode(REG_MULTI_SZ, b"\0\0") == []
    assert decode(REG_DWORD, b"\x01\x02\x00\x00") == 0x0201
    assert decode(REG_DWORD_BIG_ENDIAN, b"\x00\x00\x01\x02") == 0x0102
    assert decode(REG_QWORD, struct.pack("<Q", 1 << 40)) == 1 << 40
    assert decode(REG_BINARY, b"\x00\xff") == b"\x00\xff"
    assert decode(REG_NONE, b"\x08\x00") == b"\x08\x00"
    assert decode(REG_DWORD, b"\x01") == b"\x01"  # too short for a DWORD: the bytes, not a guess


# the fixture builder -------------------------------------------------------------------------------------------


def test_empty_hive_is_one_hivex_accepts(tmp_path: Path) -> None:
    path = tmp_path / "EMPTY"
    empty_hive(path, "CMI-CreateHive{TEST}")
    data = path.read_bytes()
    assert len(data) == 8192 and data[:4] == b"regf" and data[4096:4100] == b"hbin"
    checksum = 0
    for (word,) in struct.iter_unpack("<I", data[:508]):
        checksum ^= word
    assert struct.unpack_from("<I", data, 508)[0] == checksum
    h = hivex.Hivex(str(path))
    assert h.node_name(h.root()) == "CMI-CreateHive{TEST}"
    assert h.node_children(h.root()) == []


# reading -------------------------------------------------------------------------------------------------------


def test_keys_by_backslash_path_without_regard_to_case(hive_file: Path) -> None:
    hive = open_hive(hive_file)
    node = hive.key(r"controlset002\CONTROL\computername\ComputerName")
    assert node is not None
    assert hive.string(node, "computername") == "WS-0042"
    assert hive.key(r"ControlSet002\Control\Nope") is None
    assert hive.key(r"\ControlSet002\\Control\\") == hive.key(r"ControlSet002\Control")
    assert hive.value(r"Nope\Deeper", "x") is None and hive.values("Nope") == {} and hive.subkeys("Nope") == []


def test_names_beyond_ascii_fold_as_windows_folds_them(hive_file: Path) -> None:
    hive = open_hive(hive_file)
    assert hive.string("GRÖSSE", "ähnlich") is None  # ß is not SS to Windows either
    assert hive.string("größe", "ähnlich") == "yes"
    assert hive.string("GRÖßE", "ÄHNLICH") == "yes"


def test_values_decoded_by_type(hive_file: Path) -> None:
    hive = open_hive(hive_file)
    assert hive.value("Values", "text") == "hello"
    assert hive.value("Values", "Path") == r"%SystemRoot%\inf"
    assert hive.raw("Values", "Path").kind == REG_EXPAND_SZ  # type: ignore[union-attr]
    assert hive.value("Values", "List") == ["a", "b c"]
    assert hive.dword("Values", "Number") == 0xDEADBEEF
    assert hive.value("Values", "Blob") == b"\x00\x01\x02"
    assert hive.value("Values", "") == b"\x08\x00"  # the key's default value
    assert hive.value("Values", "Big") == 0x0102
    assert hive.string("Values", "Number") is None and hive.dword("Values", "Text") is None
    assert sorted(n for n, _ in hive.subkeys("")) == ["ControlSet001", "ControlSet002", "Größe", "Select", "Values"]


def test_control_set_follows_select_current(hive_file: Path, tmp_path: Path) -> None:
    assert open_hive(hive_file).control_set() == "ControlSet002"
    other = make_hive(tmp_path / "OTHER", {"ControlSet003": {}, "ControlSet001": {}})
    assert open_hive(other).control_set() == "ControlSet001"  # no Select: the lowest there is
    gone = make_hive(tmp_path / "GONE", {"Select": {"Current": 5}, "ControlSet002": {}})
    assert open_hive(gone).control_set() == "ControlSet002"
    assert open_hive(make_hive(tmp_path / "NONE", {"Setup": {}})).control_set() is None


# writing -------------------------------------------------------------------------------------------------------


def test_set_values_and_make_keys_then_read_back(hive_file: Path) -> None:
    hive = open_hive(hive_file, write=True)
    hive.set_string("Setup", "UnattendFile", r"C:\Windows\Panther\unattend.xml")
    hive.set_string(r"Microsoft\Windows\CurrentVersion", "DevicePath", r"%SystemRoot%\inf;C:\Drivers", expand=True)
    hive.set_dword(r"controlset002\Control\New\Deeper", "Start", 3)
    hive.set_string(r"ControlSet002\Control\ComputerName\ComputerName", "ComputerName", "WS-0043")  # replaces
    hive.commit()
    h = hivex.Hivex(str(hive_file))
    setup = h.node_get_child(h.root(), "Setup")
    assert [(h.value_key(v), h.value_value(v)) for v in h.node_values(setup)] == [
        ("UnattendFile", (REG_SZ, "C:\\Windows\\Panther\\unattend.xml\0".encode("utf-16-le")))]
    again = open_hive(hive_file)
    assert again.raw(r"Microsoft\Windows\CurrentVersion", "DevicePath").kind == REG_EXPAND_SZ  # type: ignore[union-attr]
    assert again.dword(r"ControlSet002\Control\New\Deeper", "start") == 3
    assert again.string(r"ControlSet002\Control\ComputerName\ComputerName", "ComputerName") == "WS-0043"
    assert [n for n, _ in again.subkeys(r"ControlSet002\Control")] == ["ComputerName", "New"]  # no duplicate key


def test_a_read_only_hive_refuses_writes(hive_file: Path) -> None:
    hive = open_hive(hive_file)
    with pytest.raises(ValueError, match="read-only"):
        hive.set_dword("Select", "Current", 1)
    with pytest.raises(ValueError):
        open_hive(hive_file, write=True).set_dword("Select", "Current", -1)


# errors --------------------------------------------------------------------------------------------------------


def test_not_a_hive_is_an_image_error_naming_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "SOFTWARE"
    junk.write_bytes(b"MZ" + bytes(9000))
    with pytest.raises(ImageError, match=f"{junk}.*not a hive"):
        open_hive(junk)
    short = tmp_path / "SHORT"
    short.write_bytes(b"regf" + bytes(100))
    with pytest.raises(ImageError, match="SHORT"):
        open_hive(short)


def test_a_corrupt_hive_is_an_image_error(hive_file: Path) -> None:
    data = bytearray(hive_file.read_bytes())
    data[0x30] ^= 0xFF  # inside the checksummed header
    hive_file.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=f"{hive_file}.*corrupt"):
        open_hive(hive_file)


def test_missing_and_symlinked_hives(hive_file: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_hive(tmp_path / "NOPE")
    link = tmp_path / "LINK"
    link.symlink_to(hive_file)
    with pytest.raises(ImageError, match="symlink"):
        open_hive(link)


# windows_path --------------------------------------------------------------------------------------------------


def test_windows_path_ignores_case_and_never_follows_symlinks(tmp_path: Path) -> None:
    config = tmp_path / "WINDOWS" / "system32" / "Config"
    config.mkdir(parents=True)
    (config / "SYSTEM").write_bytes(b"x")
    assert windows_path(tmp_path, "Windows/System32/config/system") == config / "SYSTEM"
    assert windows_path(tmp_path, "Windows/System32/config", want="dir") == config
    assert windows_path(tmp_path, "Windows/System32/config") is None  # a folder, not a file
    assert windows_path(tmp_path, "Windows/System32/config/SOFTWARE") is None
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "SOFTWARE").write_bytes(b"x")
    os.symlink(outside / "SOFTWARE", config / "SOFTWARE")
    os.symlink(outside, tmp_path / "Linked")
    assert windows_path(tmp_path, "Windows/System32/config/SOFTWARE") is None
    assert windows_path(tmp_path, "Linked/SOFTWARE") is None
