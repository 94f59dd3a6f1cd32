"""The status store: idempotent atomic ingest, summaries that follow the newest event, timelines in
order, machines and their current deployment, tokens, holds, paging and error grouping."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peagent.server.assign import Identity
from peagent.server.store import MAX_TOKENS, StatusStore, StoreError, Summary, advance, next_status
from peagent.status.event import validate_event

NOW = 1_700_000_000.0
MAC = "52:54:00:12:34:56"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StatusStore]:
    s = StatusStore(tmp_path / "status.sqlite")
    yield s
    s.close()


def event(deployment: str, seq: int, phase: str = "write", source: str = "pe", **fields: Any) -> dict[str, Any]:
    """A valid schema 1 event (validated as the API would)."""
    return validate_event({"schema": 1, "id": f"event-{deployment}-{source}-{seq}", "deployment_id": deployment,
                           "seq": seq, "source": source, "time": NOW + seq, "phase": phase,
                           "message": f"{phase} {seq}", **fields})


def test_ingest_counts_and_a_replay_is_a_duplicate(store: StatusStore) -> None:
    batch = [event("d1", i) for i in range(1, 4)]
    assert store.ingest(batch, NOW) == (3, 0)
    assert store.ingest(batch, NOW) == (0, 3)
    assert store.ingest([event("d1", 3), event("d1", 4)], NOW) == (1, 1)
    assert [e["seq"] for e in store.events("d1")] == [1, 2, 3, 4]
    assert store.deployment("d1")["events"] == 4


def test_the_same_event_id_in_two_deployments_is_two_events(store: StatusStore) -> None:
    a, b = event("d1", 1), event("d2", 1)
    b["id"] = a["id"]
    assert store.ingest([a], NOW) == (1, 0)
    assert store.ingest([b], NOW) == (1, 0)


def test_a_batch_is_stored_whole_or_not_at_all(store: StatusStore) -> None:
    good = event("d1", 1)
    bad = event("d1", 2)
    bad["seq"] = 1 << 70  # more than SQLite's integers: the insert fails mid-batch
    with pytest.raises(OverflowError):
        store.ingest([good, bad], NOW)
    assert store.events("d1") == []
    assert store.deployment("d1") is None
    assert store.ingest([good], NOW) == (1, 0)


def test_the_summary_follows_the_newest_event_even_when_events_arrive_late(store: StatusStore) -> None:
    store.ingest([event("d1", 5, "write", done=500, total=1000, rate=100.0, eta=5.0, dp="http://dp1")], NOW)
    store.ingest([event("d1", 2, "partition", warnings=["slow disk"])], NOW + 1)
    s = store.deployment("d1")
    assert (s["phase"], s["done"], s["total"], s["rate"], s["eta"], s["dp"]) == ("write", 500, 1000, 100.0, 5.0,
                                                                                  "http://dp1")
    assert (s["events"], s["warnings"], s["updated"]) == (2, 1, NOW + 1)
    store.ingest([event("d1", 6, "verify", retries=2)], NOW + 2)
    s = store.deployment("d1")
    assert (s["phase"], s["done"], s["retries"], s["dp"]) == ("verify", None, 2, "http://dp1")


@pytest.mark.parametrize(("phases", "status"), [
    (["boot", "write"], "running"),
    (["write", "done"], "done"),
    (["write", "done", "reboot"], "done"),
    (["write", "failed"], "failed"),
    (["write", "failed", "reboot"], "failed"),
    (["write", "failed", "boot"], "running"),  # the PE started the deployment over
    (["done", "reboot", "done"], "done"),
])
def test_status_from_the_pe_events(store: StatusStore, phases: list[str], status: str) -> None:
    store.ingest([event("d1", i, p) for i, p in enumerate(phases, 1)], NOW)
    assert store.deployment("d1")["status"] == status


def test_an_error_fails_the_deployment_and_is_kept_and_first_boot_completes(store: StatusStore) -> None:
    store.ingest([event("d1", 1, "fetch", level="error",
                        error={"code": "fetch.failed", "message": "HTTP 404"})], NOW)
    s = store.deployment("d1")
    assert (s["status"], s["error"], s["finished"]) == ("failed", {"code": "fetch.failed", "message": "HTTP 404"},
                                                        NOW)
    store.ingest([event("d2", 1, "done"), event("d2", 1, "complete", source="firstboot")], NOW + 5)
    s = store.deployment("d2")
    assert (s["status"], s["phase"], s["finished"]) == ("complete", "complete", NOW + 5)


def test_next_status_and_advance_are_pure() -> None:
    assert next_status("complete", {"phase": "reboot", "error": None}) == "complete"
    assert next_status("cancelled", {"phase": "boot", "error": None}) == "cancelled"
    assert next_status("running", {"phase": "x", "error": {"code": "a", "message": "b"}}) == "failed"
    s = advance(Summary(), event("d", 3, "write"), NOW)
    late = advance(s, event("d", 1, "done"), NOW)
    assert (late.status, late.phase, late.events) == ("running", "write", 2)


def test_the_timeline_is_in_source_then_seq_order(store: StatusStore) -> None:
    store.ingest([event("d1", 1, "complete", source="firstboot"), event("d1", 10, "done"), event("d1", 2)], NOW)
    store.server_event("d1", "task", "handed out", now=NOW)
    store.ingest([event("d1", 1, "boot")], NOW)
    order = [(e["source"], e["seq"]) for e in store.events("d1")]
    assert order == [("server", 1), ("pe", 1), ("pe", 2), ("pe", 10), ("firstboot", 1)]
    summary, bodies = store.timeline("d1")
    assert summary["events"] == len(bodies) == 5
    assert store.timeline("nope") is None


def test_events_of_a_static_task_make_its_machine_known(store: StatusStore) -> None:
    machine = {"macs": [MAC], "model": "ThinkPad", "hostname": "ws1"}
    store.ingest([event("static-1", 1, "boot", machine=machine)], NOW)
    m = store.machine(MAC, NOW)
    assert (m["model"], m["hostname"], m["macs"], m["last_seen"]) == ("ThinkPad", "ws1", [MAC], NOW)
    assert m["deployment"]["id"] == "static-1"
    store.ingest([event("static-2", 1, "boot", machine={"macs": [MAC]})], NOW + 1)
    store.ingest([event("static-1", 2, "write", machine={"macs": [MAC]})], NOW + 2)
    # The newest deployment stays current, though the older one spoke last.
    assert store.machine(MAC, NOW)["deployment"]["id"] == "static-2"
    assert store.machine(MAC, NOW)["hostname"] == "ws1"  # not reported again: kept
    assert [d["id"] for d in store.deployments_of(MAC)] == ["static-2", "static-1"]


def test_an_issued_deployment_tokens_and_the_machine_view(store: StatusStore) -> None:
    identity = Identity(macs=(MAC,), model="T14", vendor="LENOVO")
    key = store.see_machine(identity, NOW)
    assert key == MAC
    store.set_hold(key, "approved")
    store.issue("lab-abc", machine=key, rule="lab", task_name="tasks/lab.json",
                task={"id": "lab-abc", "status": {"token": "never stored"}}, now=NOW)
    assert store.task("lab-abc") == ({"id": "lab-abc"}, "running")
    view = store.machine_view(key)
    assert (view.state, view.running, view.completed_rules) == ("none", ("lab-abc", "lab"), frozenset())
    assert store.check_token("lab-abc", "x" * 32) is False  # issued, but no token handed out yet
    store.add_token("lab-abc", "a" * 32, NOW)
    assert store.check_token("lab-abc", "a" * 32) is True
    assert store.check_token("lab-abc", "b" * 32) is False
    assert store.check_token("not-issued", "a" * 32) is None
    for i in range(MAX_TOKENS):
        store.add_token("lab-abc", f"{i:032d}", NOW + 1 + i)
    assert store.check_token("lab-abc", "a" * 32) is False  # the oldest lapsed
    assert store.check_token("lab-abc", f"{MAX_TOKENS - 1:032d}") is True
    store.ingest([event("lab-abc", 1, "done")], NOW)
    view = store.machine_view(key)
    assert (view.running, view.completed_rules) == (None, frozenset({"lab"}))


def test_the_database_file_keeps_no_token(store: StatusStore, tmp_path: Path) -> None:
    store.see_machine(Identity(macs=(MAC,)), NOW)
    store.issue("d-1", machine=MAC, rule="r", task_name="t.json", task={"status": {"token": "T" * 40}}, now=NOW)
    store.add_token("d-1", "S" * 40, NOW)
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("status.sqlite"))
    assert b"T" * 40 not in raw and b"S" * 40 not in raw
    assert b"d-1" in raw  # the search would have found text in these files


def test_holds_pending_and_cancel(store: StatusStore) -> None:
    assert store.set_hold(MAC, "approved") is False  # never seen
    assert store.cancel(MAC, NOW) is False
    store.see_machine(Identity(macs=(MAC,)), NOW)
    store.mark_pending(MAC)
    assert store.machine(MAC, NOW)["state"] == "pending"
    store.set_hold(MAC, "postponed", NOW + 60)
    store.mark_pending(MAC)  # an administrator already spoke: stays postponed
    m = store.machine(MAC, NOW)
    assert (m["state"], m["postponed_until"]) == ("postponed", NOW + 60)
    assert store.machine(MAC, NOW + 61)["state"] == "approved"
    store.issue("d-1", machine=MAC, rule="r", task_name="t.json", task={}, now=NOW)
    assert store.machine(MAC, NOW)["state"] == "none"  # the approval is used up
    store.ingest([event("d-1", 1, "write")], NOW)
    assert store.cancel(MAC, NOW + 3) is True
    s = store.deployment("d-1")
    assert (s["status"], s["finished"]) == ("cancelled", NOW + 3)
    assert [e["phase"] for e in store.events("d-1") if e["source"] == "server"] == ["cancelled"]
    store.ingest([event("d-1", 2, "done")], NOW + 4)  # the PE did not hear of it in time
    assert store.deployment("d-1")["status"] == "cancelled"
    assert store.machine_view(MAC).state == "cancelled"


def test_deployments_page_newest_first(store: StatusStore) -> None:
    for i in range(7):
        store.ingest([event(f"d{i}", 1, "failed" if i % 2 else "write")], NOW + i)
    page, cursor = store.deployments(limit=3)
    assert [d["id"] for d in page] == ["d6", "d5", "d4"]
    page, cursor = store.deployments(limit=3, before=cursor)
    assert [d["id"] for d in page] == ["d3", "d2", "d1"]
    page, cursor = store.deployments(limit=3, before=cursor)
    assert ([d["id"] for d in page], cursor) == (["d0"], None)
    failed, _ = store.deployments(status="failed")
    assert [d["id"] for d in failed] == ["d5", "d3", "d1"]


def test_errors_grouped_by_code_model_and_dp(store: StatusStore) -> None:
    def fail(i: int, code: str, model: str, dp: str) -> None:
        store.ingest([event(f"f{i}", 1, "fetch", machine={"macs": [f"52:54:00:00:00:{i:02x}"], "model": model},
                            dp=dp, error={"code": code, "message": f"{code} #{i}"})], NOW + i)

    for i in range(7):
        fail(i, "fetch.failed", "T14" if i < 4 else "X1", "http://dp1")
    fail(7, "disk.too_small", "X1", "http://dp2")
    store.ingest([event("ok", 1, "done")], NOW)
    errors = store.errors()
    fetch = errors["by_code"][0]
    assert (fetch["code"], fetch["count"], fetch["message"]) == ("fetch.failed", 7, "fetch.failed #6")
    assert fetch["deployments"] == ["f6", "f5", "f4", "f3", "f2"]
    assert errors["by_code"][1] == {"code": "disk.too_small", "count": 1, "message": "disk.too_small #7",
                                    "deployments": ["f7"]}
    assert errors["by_model"] == [{"model": "T14", "code": "fetch.failed", "count": 4},
                                  {"model": "X1", "code": "fetch.failed", "count": 3},
                                  {"model": "X1", "code": "disk.too_small", "count": 1}]
    assert errors["by_dp"] == [{"dp": "http://dp1", "code": "fetch.failed", "count": 7},
                               {"dp": "http://dp2", "code": "disk.too_small", "count": 1}]


def test_the_store_survives_a_reopen_and_refuses_a_foreign_database(tmp_path: Path) -> None:
    path = tmp_path / "status.sqlite"
    s = StatusStore(path)
    s.ingest([event("d1", 1)], NOW)
    s.close()
    s = StatusStore(path)
    assert s.deployment("d1")["events"] == 1
    s.close()
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (x)")
    with pytest.raises(StoreError, match="not a peagent status database"):
        StatusStore(other)
