"""Task over capture: what migrates, per MAC for interfaces, and where each value came from."""

from __future__ import annotations

from peagent.state.merge import merge, resolve
from peagent.state.model import Captured, DomainJoin, HostKey, Interface, MachineState, Secret
from peagent.state.spec import parse_state
from peagent.state.template import Identity

MAC = "52:54:00:12:34:56"
OLD = Captured(os="windows", source="Windows on /dev/sda3", notes=("no SECURITY hive",), state=MachineState(
    computer_name="OLD-PC", owner="Ann", organization="Old Corp", product_key=Secret("ABCDE-FGHIJ-KLMNO-PQRST-UVWXY"),
    timezone="Pacific Standard Time", domain=DomainJoin("corp.example.com"),
    interfaces=(Interface(MAC, dhcp=False, addresses=("10.1.2.3/24",), gateway="10.1.2.1"),
                Interface("52:54:00:99:99:99", dhcp=False, addresses=("10.9.9.9/24",)),
                Interface(None, dhcp=False, addresses=("10.8.8.8/24",), name="{GUID}"),
                Interface("52:54:00:12:34:57"))))


def test_migrate_takes_only_what_is_listed_and_the_task_wins() -> None:
    spec = parse_state({"computer_name": "NEW-{serial}", "migrate": ["computer_name", "user_name", "product_key"]})
    given, warnings = resolve(spec, Identity(serial="42"), "windows")
    merged = merge(given, spec, OLD, [MAC])
    s = merged.state
    assert (s.computer_name, s.owner, s.organization, s.timezone) == ("NEW-42", "Ann", None, None)
    assert s.product_key is not None and s.product_key.reveal() == "ABCDE-FGHIJ-KLMNO-PQRST-UVWXY"
    assert merged.origins == {"computer_name": "task", "owner": "Windows on /dev/sda3",
                              "product_key": "Windows on /dev/sda3"}
    assert warnings == []
    lines = merged.lines()
    assert "computer_name: NEW-42 (from task)" in lines and "owner: Ann (from Windows on /dev/sda3)" in lines
    assert "product_key: <secret> (from Windows on /dev/sda3)" in lines
    assert "note: no SECURITY hive" in lines
    assert not any("ABCDE" in line for line in lines)


def test_interfaces_migrate_per_mac_for_nics_this_machine_still_has() -> None:
    spec = parse_state({"migrate": ["ip_address"],
                        "network": [{"mac": "52:54:00:12:34:57", "addresses": ["10.5.5.5/24"]}]})
    merged = merge(spec.given, spec, OLD, [MAC, "52:54:00:12:34:57"])
    assert [(i.mac, i.addresses) for i in merged.state.interfaces] == [("52:54:00:12:34:57", ("10.5.5.5/24",)),
                                                                       (MAC, ("10.1.2.3/24",))]
    assert any("52:54:00:99:99:99, {GUID} are not kept" in n for n in merged.notes)


def test_a_captured_domain_without_credentials_is_reported_not_joined() -> None:
    spec = parse_state({"migrate": ["domain"]})
    merged = merge(spec.given, spec, OLD, [MAC])
    assert merged.state.domain is None
    assert any("joined to corp.example.com; joining again needs credentials" in n for n in merged.notes)
    with_creds = parse_state({"migrate": ["domain"], "domain": {"name": "corp.example.com", "username": "svc",
                                                                 "password": "pw"}})
    assert merge(with_creds.given, with_creds, OLD, [MAC]).state.domain == with_creds.given.domain


def test_admin_password_cannot_migrate_from_windows_but_roots_hash_does_from_linux() -> None:
    spec = parse_state({"migrate": ["admin_password"]})
    merged = merge(spec.given, spec, OLD, [MAC])
    assert merged.state.root_password_hash is None
    assert any("cannot migrate from Windows" in n for n in merged.notes)
    linux = Captured("linux", "Debian on /dev/sda2", MachineState(root_password_hash=Secret("$6$s$h")))
    assert merge(spec.given, spec, linux, [MAC]).state.root_password_hash == Secret("$6$s$h")


def test_ssh_host_keys_are_kept_only_when_the_policy_says_so() -> None:
    key = HostKey("ed25519", Secret("-----BEGIN OPENSSH PRIVATE KEY-----"), "ssh-ed25519 AAAA host")
    linux = Captured("linux", "Debian on /dev/sda2", MachineState(computer_name="db1", ssh_host_keys=(key,)))
    keep = parse_state({"migrate": ["computer_name"], "ssh_host_keys": "keep"})
    assert merge(keep.given, keep, linux, [MAC]).state.ssh_host_keys == (key,)
    new = parse_state({"migrate": ["computer_name"]})
    assert merge(new.given, new, linux, [MAC]).state.ssh_host_keys == ()
    assert "BEGIN OPENSSH" not in repr(merge(keep.given, keep, linux, [MAC]))


def test_nothing_captured_is_a_note() -> None:
    spec = parse_state({"migrate": ["computer_name"]})
    merged = merge(spec.given, spec, None, [MAC])
    assert merged.state == MachineState()
    assert merged.notes == ("nothing captured (no old OS found), so nothing migrates: computer_name",)
