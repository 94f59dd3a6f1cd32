"""The captured state survives the wipe: saved 0600 and read back exactly, secrets included."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from peagent.state import document
from peagent.state.model import Captured, DomainJoin, HostKey, Interface, MachineState, Secret

CAPTURED = Captured(os="linux", source="Debian on /dev/sda2", notes=("no netplan",), state=MachineState(
    computer_name="db1", dns_domain="corp.example.com", timezone="Europe/Berlin",
    root_password_hash=Secret("$6$salt$hash"), domain=DomainJoin("corp.example.com", "u", Secret("pw")),
    interfaces=(Interface("52:54:00:12:34:56", dhcp=False, addresses=("10.0.0.5/24",), gateway="10.0.0.1",
                          dns=("10.0.0.2",), search=("corp.example.com",), name="ens3"),),
    ssh_host_keys=(HostKey("ed25519", Secret("PRIVATE"), "ssh-ed25519 AAAA db1"),),
    ssh_authorized_keys=("ssh-ed25519 AAAA admin",)))


def test_save_and_restore_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "captured-d1.json"
    document.save(CAPTURED, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert document.restore(path) == CAPTURED
    assert document.restore(tmp_path / "none.json") is None


def test_a_broken_document_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "captured-d1.json"
    path.write_text('{"format": 1, "state": {"bogus": 1}, "os": "linux", "source": "x"}')
    with pytest.raises(ValueError, match=r"captured-d1\.json"):
        document.restore(path)
