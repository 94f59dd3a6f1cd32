"""Assignment decisions: rules, globs, groups, once, approve, postpone, cancel, the unknown policy,
and the configuration's validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peagent.server.assign import (
    AssignmentError,
    Assignments,
    Identity,
    IdentityError,
    MachineView,
    decide,
    effective_state,
    first_match,
    load_assignments,
    machine_key,
    parse_assignments,
    parse_identity,
)

NOW = 1_700_000_000.0
LAB_UUID = "4c4c4544-0042-3510-8052-b2c04f4d3732"
CONFIG = {
    "unknown": "refuse",
    "groups": {"lab": ["52:54:00:12:34:56", LAB_UUID.upper(), "SN-LAB-7"]},
    "rules": [
        {"name": "lab-thinkpads", "match": {"group": "lab", "model": "ThinkPad*"}, "task": "tasks/lab.json",
         "once": True},
        {"name": "dell", "match": {"vendor": "dell*"}, "task": "tasks/dell.json", "approve": True},
        {"name": "vms", "match": {"mac": "52:54:00:*"}, "task": "tasks/vm.json"},
    ],
}


def config(**changes: object) -> Assignments:
    return parse_assignments({**CONFIG, **changes})


def test_the_first_matching_rule_wins_and_every_key_must_match() -> None:
    a = config()
    thinkpad = Identity(macs=("52:54:00:12:34:56",), model="ThinkPad T14")
    assert first_match(a, thinkpad).name == "lab-thinkpads"
    # In the group but not a ThinkPad: the next rule that matches (its MAC glob).
    assert first_match(a, Identity(macs=("52:54:00:12:34:56",), model="OptiPlex")).name == "vms"
    # A ThinkPad outside the group: no group match, and its MAC is no VM's.
    assert first_match(a, Identity(macs=("aa:bb:cc:dd:ee:ff",), model="ThinkPad T14")) is None


def test_globs_are_case_insensitive_and_a_key_not_reported_never_matches() -> None:
    a = config()
    assert first_match(a, Identity(macs=("aa:bb:cc:dd:ee:01",), vendor="DELL Inc.")).name == "dell"
    assert first_match(a, Identity(macs=("aa:bb:cc:dd:ee:01",), vendor="Lenovo")) is None
    assert first_match(a, Identity(macs=("aa:bb:cc:dd:ee:01",))) is None  # no vendor given


def test_any_of_the_machines_macs_matches_and_groups_hold_uuids_and_serials() -> None:
    a = config()
    two = Identity(macs=("aa:bb:cc:dd:ee:01", "52:54:00:99:99:99"))
    assert first_match(a, two).name == "vms"
    by_uuid = Identity(macs=("aa:bb:cc:dd:ee:02",), uuid=LAB_UUID, model="ThinkPad X1")
    by_serial = Identity(macs=("aa:bb:cc:dd:ee:03",), serial="sn-lab-7", model="thinkpad x13")
    assert first_match(a, by_uuid).name == "lab-thinkpads"
    assert first_match(a, by_serial).name == "lab-thinkpads"


def test_unknown_machines_get_the_default_task_or_are_refused() -> None:
    stranger = Identity(macs=("aa:bb:cc:dd:ee:ff",))
    refused = decide(config(), stranger, MachineView(), NOW)
    assert refused.kind == "refused"
    default = decide(config(unknown="default", default_task="tasks/any.json"), stranger, MachineView(), NOW)
    assert (default.kind, default.rule, default.task) == ("deploy", "default", "tasks/any.json")
    nothing = decide(config(unknown="default", default_task=None), stranger, MachineView(), NOW)
    assert nothing.kind == "none" and "no default task" in nothing.reason


def test_without_a_configuration_the_machines_task_files_are_looked_up_as_the_agent_does() -> None:
    identity = Identity(macs=("aa:bb:cc:dd:ee:ff", "52:54:00:00:00:01"), uuid=LAB_UUID)
    d = decide(Assignments(), identity, MachineView(), NOW)
    assert (d.kind, d.rule) == ("lookup", "static")
    assert d.candidates == ("tasks/aa-bb-cc-dd-ee-ff.json", "tasks/52-54-00-00-00-01.json", f"tasks/{LAB_UUID}.json",
                            "tasks/default.json")
    continued = decide(Assignments(), identity, MachineView(running=("ws-1", "static")), NOW)
    assert (continued.kind, continued.reuse) == ("deploy", "ws-1")
    # An administrator's hold applies all the same.
    assert decide(Assignments(), identity, MachineView(state="cancelled"), NOW).kind == "cancelled"


def test_a_once_rule_is_not_given_again_once_completed_but_other_rules_still_are() -> None:
    thinkpad = Identity(macs=("52:54:00:12:34:56",), model="ThinkPad T14")
    first = decide(config(), thinkpad, MachineView(), NOW)
    assert (first.kind, first.rule) == ("deploy", "lab-thinkpads")
    again = decide(config(), thinkpad, MachineView(completed_rules=frozenset({"lab-thinkpads"})), NOW)
    assert again.kind == "none" and "once" in again.reason
    # "vms" is not once: a completed deployment of it does not stop the next.
    vm = Identity(macs=("52:54:00:77:77:77",))
    assert decide(config(), vm, MachineView(completed_rules=frozenset({"vms"})), NOW).kind == "deploy"


def test_a_running_deployment_of_the_same_rule_is_continued_not_started_again() -> None:
    thinkpad = Identity(macs=("52:54:00:12:34:56",), model="ThinkPad T14")
    d = decide(config(), thinkpad, MachineView(running=("lab-1234", "lab-thinkpads")), NOW)
    assert (d.kind, d.reuse) == ("deploy", "lab-1234")
    # A running deployment of another rule (the rules changed since) is not continued.
    d = decide(config(), thinkpad, MachineView(running=("vm-1", "vms")), NOW)
    assert (d.kind, d.reuse, d.rule) == ("deploy", None, "lab-thinkpads")


def test_an_approve_rule_waits_until_approved() -> None:
    dell = Identity(macs=("aa:bb:cc:dd:ee:01",), vendor="Dell Inc.")
    pending = decide(config(retry_after=30), dell, MachineView(), NOW)
    assert (pending.kind, pending.retry_after, pending.rule) == ("pending", 30, "dell")
    assert decide(config(), dell, MachineView(state="pending"), NOW).kind == "pending"
    approved = decide(config(), dell, MachineView(state="approved"), NOW)
    assert (approved.kind, approved.rule) == ("deploy", "dell")


def test_postponed_machines_wait_then_go_even_under_an_approve_rule() -> None:
    dell = Identity(macs=("aa:bb:cc:dd:ee:01",), vendor="Dell Inc.")
    held = MachineView(state="postponed", postponed_until=NOW + 45)
    d = decide(config(), dell, held, NOW)
    assert (d.kind, d.retry_after, d.until) == ("postponed", 45, NOW + 45)
    # A long postponement is re-asked at the configured interval, so an early approval is seen.
    long = decide(config(retry_after=20), dell, MachineView(state="postponed", postponed_until=NOW + 7200), NOW)
    assert long.retry_after == 20
    # Once the time has come, the postponement was an approval for then.
    assert decide(config(), dell, held, NOW + 46).kind == "deploy"
    assert effective_state("postponed", NOW + 45, NOW + 46) == "approved"
    assert effective_state("postponed", NOW + 45, NOW) == "postponed"


def test_a_cancelled_machine_is_refused_whatever_the_rules_say() -> None:
    vm = Identity(macs=("52:54:00:77:77:77",))
    d = decide(config(), vm, MachineView(state="cancelled", running=("vm-1", "vms")), NOW)
    assert d.kind == "cancelled"


@pytest.mark.parametrize(("uuid", "macs", "key"), [
    (LAB_UUID.upper(), ("52:54:00:12:34:56",), LAB_UUID),
    ("00000000-0000-0000-0000-000000000000", ("52:54:00:12:34:56",), "52:54:00:12:34:56"),
    ("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", ("52:54:00:12:34:56",), "52:54:00:12:34:56"),
    (None, ("52:54:00:12:34:56", "52:54:00:00:00:01"), "52:54:00:12:34:56"),
    (None, (), None),
])
def test_machine_key_is_the_real_uuid_else_the_first_mac(uuid: str | None, macs: tuple[str, ...],
                                                         key: str | None) -> None:
    assert machine_key(uuid, macs) == key


def test_identity_from_a_query_is_normalised() -> None:
    identity = parse_identity({"mac": ["52-54-00-12-34-56", "", "AA:BB:CC:DD:EE:FF", "52:54:00:12:34:56"],
                               "uuid": [LAB_UUID.upper().replace("-", "")], "serial": [" SN1 "],
                               "model": [""]})
    assert identity == Identity(macs=("52:54:00:12:34:56", "aa:bb:cc:dd:ee:ff"), uuid=LAB_UUID, serial="SN1")
    assert identity.key == LAB_UUID


@pytest.mark.parametrize(("query", "field"), [
    ({"mac": ["52:54:00:12:34"]}, "mac"),
    ({"uuid": ["not-a-uuid"]}, "uuid"),
    ({"serial": ["a", "b"]}, "serial"),
    ({"model": ["x" * 201]}, "model"),
    ({"vendor": ["bad\nline"]}, "vendor"),
    ({"hostname": ["x"]}, "hostname"),
])
def test_a_malformed_identity_names_the_parameter(query: dict[str, list[str]], field: str) -> None:
    with pytest.raises(IdentityError) as caught:
        parse_identity(query)
    assert caught.value.field == field


@pytest.mark.parametrize(("change", "field"), [
    ({"unknown": "maybe"}, "unknown"),
    ({"rules": [{"name": "a", "match": {"modle": "x"}, "task": "t.json"}]}, "rules[0].match.modle"),
    ({"rules": [{"name": "a", "match": {}, "task": "t.json"}]}, "rules[0].match"),
    ({"rules": [{"name": "a", "match": {"group": "nope"}, "task": "t.json"}]}, "rules[0].match.group"),
    ({"rules": [{"name": "a", "match": {"mac": "*"}, "task": "../etc/passwd"}]}, "rules[0].task"),
    ({"rules": [{"name": "a", "match": {"mac": "*"}, "task": "/etc/passwd"}]}, "rules[0].task"),
    ({"rules": [{"name": "a", "match": {"mac": "*"}, "task": "t.json", "once": "yes"}]}, "rules[0].once"),
    ({"rules": [{"name": "a", "match": {"mac": "*"}, "task": "t.json"},
                {"name": "a", "match": {"mac": "*"}, "task": "u.json"}]}, "rules[1].name"),
    ({"rules": [{"name": "default", "match": {"mac": "*"}, "task": "t.json"}]}, "rules[0].name"),
    ({"rules": [{"name": "static", "match": {"mac": "*"}, "task": "t.json"}]}, "rules[0].name"),
    ({"rules": [{"name": "a", "match": {"mac": "*"}, "task": "t.json", "approved": True}]}, "rules[0].approved"),
    ({"groups": {"lab": "52:54:00:12:34:56"}}, "groups.lab"),
    ({"retry_after": 0}, "retry_after"),
    ({"rule": []}, "rule"),
])
def test_a_wrong_configuration_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(AssignmentError) as caught:
        parse_assignments({**CONFIG, **change})
    assert caught.value.field == field


def test_a_configuration_file_error_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "peagent-serve.json"
    path.write_text(json.dumps({**CONFIG, "unknown": "maybe"}))
    with pytest.raises(AssignmentError, match=r"peagent-serve.json: unknown: expected"):
        load_assignments(path)
    path.write_text("{not json")
    with pytest.raises(AssignmentError, match="invalid JSON"):
        load_assignments(path)
    path.write_text(json.dumps(CONFIG))
    assert [r.name for r in load_assignments(path).rules] == ["lab-thinkpads", "dell", "vms"]
