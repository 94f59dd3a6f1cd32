"""The event schema: what validate_event accepts, and the exact field it names for each fault."""

from __future__ import annotations

import copy
import json

import pytest

from peagent.status.event import MAX_EVENT_BYTES, Event, EventError, validate_event

MINIMAL = {"schema": 1, "id": "0123456789abcdef", "deployment_id": "wave-1:ws42", "seq": 1, "source": "pe",
           "time": 1700000000.25, "phase": "write", "message": "image -> /dev/vda"}

FULL = {**MINIMAL, "step": "debian-12", "level": "warning",
        "machine": {"macs": ["52:54:00:12:34:56"], "uuid": "4c4c4544-0042-3010-8048-b4c04f4e3232",
                    "serial": "S1", "vendor": "QEMU", "model": "Standard PC", "hostname": None},
        "done": 10, "total": 20, "rate": 1.5, "eta": 6, "retries": 2, "warnings": ["slow link"],
        "error": {"code": "fetch.failed", "message": "no DP answered"}, "dp": "http://dp1/",
        "data": {"computer_name": "WS-1"}}


def test_the_minimal_event_gets_its_defaults() -> None:
    assert validate_event(MINIMAL) == {
        **MINIMAL, "step": None, "level": "info", "machine": {}, "done": None, "total": None, "rate": None,
        "eta": None, "retries": 0, "warnings": [], "error": None, "dp": None, "data": None}


def test_a_full_event_is_returned_as_given() -> None:
    assert validate_event(copy.deepcopy(FULL)) == FULL


def test_macs_are_lower_cased() -> None:
    got = validate_event({**MINIMAL, "machine": {"macs": ["52:54:00:AB:CD:EF"]}})
    assert got["machine"] == {"macs": ["52:54:00:ab:cd:ef"]}


@pytest.mark.parametrize("source", ["server", "pe", "firstboot"])
def test_every_source(source: str) -> None:
    assert validate_event({**MINIMAL, "source": source})["source"] == source


def test_an_emitters_event_validates_as_it_serialises() -> None:
    event = Event(id="d1:complete", deployment_id="d1", seq=1, source="firstboot", time=5, phase="complete",
                  message="first boot complete", warnings=("w",), error={"code": "state.failed", "message": "x"})
    doc = event.to_json()
    assert next(iter(doc)) == "schema"
    assert validate_event(json.loads(json.dumps(doc))) == doc


def faulty(**change: object) -> dict:
    doc = copy.deepcopy(FULL)
    for key, value in change.items():
        if value is DROP:
            del doc[key]
        else:
            doc[key] = value
    return doc


DROP = object()


@pytest.mark.parametrize(("event", "field", "found"), [
    (faulty(schema=2), "schema", "2"),
    (faulty(schema=True), "schema", "true (a boolean)"),
    (faulty(schema=DROP), "schema", "nothing (the field is required)"),
    (faulty(id="short"), "id", '"short"'),
    (faulty(id="a" * 81), "id", None),
    (faulty(id="has space!"), "id", '"has space!"'),
    (faulty(deployment_id=""), "deployment_id", '""'),
    (faulty(deployment_id="x" * 65), "deployment_id", None),
    (faulty(deployment_id=DROP), "deployment_id", "nothing (the field is required)"),
    (faulty(seq=-1), "seq", "-1"),
    (faulty(seq=1.5), "seq", "1.5"),
    (faulty(seq=True), "seq", "true (a boolean)"),
    (faulty(source="agent"), "source", '"agent"'),
    (faulty(time="now"), "time", '"now"'),
    (faulty(time=None), "time", "null"),
    (faulty(phase="Write"), "phase", '"Write"'),
    (faulty(phase="a" * 33), "phase", None),
    (faulty(phase="1st"), "phase", '"1st"'),
    (faulty(step="s" * 201), "step", "a string of 201 characters"),
    (faulty(step=3), "step", "3"),
    (faulty(message="m" * 4001), "message", "a string of 4001 characters"),
    (faulty(message=None), "message", "null"),
    (faulty(level="debug"), "level", '"debug"'),
    (faulty(machine=[]), "machine", "a list of 0 items"),
    (faulty(machine={"macs": "52:54:00:12:34:56"}), "machine.macs", '"52:54:00:12:34:56"'),
    (faulty(machine={"macs": ["52:54:00:12:34:56", "52-54-00-12-34-57"]}), "machine.macs[1]", '"52-54-00-12-34-57"'),
    (faulty(machine={"serial": 42}), "machine.serial", "42"),
    (faulty(machine={"ip": "10.0.0.1"}), "machine.ip", "an unknown field"),
    (faulty(done=-5), "done", "-5"),
    (faulty(total=2.5), "total", "2.5"),
    (faulty(rate=-0.1), "rate", "-0.1"),
    (faulty(eta="soon"), "eta", '"soon"'),
    (faulty(retries=None), "retries", "null"),
    (faulty(warnings="w"), "warnings", '"w"'),
    (faulty(warnings=["w"] * 51), "warnings", "a list of 51 items"),
    (faulty(warnings=["ok", 7]), "warnings[1]", "7"),
    (faulty(error="boom"), "error", '"boom"'),
    (faulty(error={"code": "fetch.failed"}), "error.message", "nothing (the field is required)"),
    (faulty(error={"message": "x"}), "error.code", "nothing (the field is required)"),
    (faulty(error={"code": "Fetch Failed", "message": "x"}), "error.code", '"Fetch Failed"'),
    (faulty(error={"code": "fetch.failed", "message": "x", "trace": "..."}), "error.trace", "an unknown field"),
    (faulty(dp=5), "dp", "5"),
    (faulty(data=[1]), "data", "a list of 1 items"),
    (faulty(extra=1), "extra", "an unknown field"),
    (faulty(phsae="write"), "phsae", "an unknown field"),
])
def test_each_malformed_field_is_named(event: dict, field: str, found: str | None) -> None:
    with pytest.raises(EventError) as info:
        validate_event(event)
    assert info.value.field == field
    if found is not None:
        assert info.value.found == found
    assert str(info.value) == f"event field {field}: expected {info.value.expected}, found {info.value.found}"


@pytest.mark.parametrize("value", [None, [], "event", 7])
def test_not_an_object(value: object) -> None:
    with pytest.raises(EventError) as info:
        validate_event(value)
    assert info.value.field == "event" and info.value.expected == "a JSON object"


def test_an_event_over_64_kib_is_refused_as_a_whole() -> None:
    big = faulty(data={"blob": "x" * MAX_EVENT_BYTES})
    with pytest.raises(EventError) as info:
        validate_event(big)
    assert info.value.field == "event" and info.value.found == f"{len(json.dumps(big, separators=(',', ':')))} bytes"


def test_a_lone_surrogate_from_json_is_measured_not_crashed_on() -> None:
    event = json.loads(json.dumps({**MINIMAL, "message": "bad \udc80 name"}))
    assert validate_event(event)["message"] == "bad \udc80 name"


def test_the_error_is_a_value_error_with_its_parts() -> None:
    with pytest.raises(ValueError, match=r"^event field seq: expected an integer >= 0, found -1$"):
        validate_event(faulty(seq=-1))
