"""The reporter: schema-1 events from the deploy's calls, held until the deployment is known, journaled, posted."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from peagent.progress import MIB, Snapshot
from peagent.state.model import Secret
from peagent.status import Reporter, validate_event
from peagent.status.console import Console

TOKEN = "reporter-token-abcdef0123"
MACHINE = {"macs": ["52:54:00:12:34:56"], "uuid": "4c4c4544-0042-3010-8048-b4c04f4e3232", "serial": "S1",
           "vendor": "QEMU", "model": "Standard PC"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def reporter(tmp_path: Path | None = None, url: str | None = None, **kwargs: object) -> Reporter:
    r = Reporter(url, journal_dir=tmp_path, console=Console(io.StringIO(), tty=False), **kwargs)  # type: ignore[arg-type]
    r.machine = dict(MACHINE)
    return r


def test_events_before_the_task_are_held_then_journaled_from_one(tmp_path: Path) -> None:
    r = reporter(tmp_path)
    r.emit("inventory", "1 disk(s)")
    r.emit("waiting", "pending; asking again in 30 s")
    assert not list(tmp_path.iterdir())  # no deployment yet: nothing on disk
    r.deployment_id = "wave-1"
    r.dp = "http://dp1/"
    r.emit("task", "wave-1 from http://dp1/api/v1/task")
    events = r.events()
    assert [(e["seq"], e["phase"], e["deployment_id"]) for e in events] == [
        (1, "inventory", "wave-1"), (2, "waiting", "wave-1"), (3, "task", "wave-1")]
    assert [e["dp"] for e in events] == [None, None, "http://dp1/"]
    for e in events:
        assert validate_event(e) == e
        assert e["source"] == "pe" and e["machine"] == MACHINE and e["level"] == "info"
    assert len({e["id"] for e in events}) == 3 and all(len(e["id"]) == 32 for e in events)
    lines = (tmp_path / "events-wave-1.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == events  # the journal holds the very ids posted


def test_a_rerun_continues_the_numbering(tmp_path: Path) -> None:
    first = reporter(tmp_path)
    first.deployment_id = "d1"
    first.emit("task", "one")
    first.emit("failed", "boom", echo=False, error_code="fetch.failed")
    rerun = reporter(tmp_path)
    rerun.emit("inventory", "again")
    rerun.deployment_id = "d1"
    assert [(e["seq"], e["phase"]) for e in rerun.events()] == [(1, "task"), (2, "failed"), (3, "inventory")]


def test_fields_map_to_the_schema(tmp_path: Path) -> None:
    r = reporter(None)
    r.deployment_id = "d1"
    failed = r.emit("failed", "no DP answered", echo=False, error_code="fetch.failed")
    warned = r.emit("plan", "warning: the disk is small")
    other = r.emit("drivers", "no driver for 8086:1234", warning="no driver for 8086:1234", step="e1000e")
    r.emit("retry", "http://dp1/x at byte 5: connection reset")
    r.emit("retry", "again")
    after = r.emit("write", "going on")
    assert failed is not None and warned is not None and other is not None and after is not None
    assert (failed["level"], failed["error"]) == ("error", {"code": "fetch.failed", "message": "no DP answered"})
    assert (warned["level"], warned["warnings"]) == ("warning", ["the disk is small"])
    assert (other["level"], other["warnings"], other["step"]) == ("warning", ["no driver for 8086:1234"], "e1000e")
    assert [e["retries"] for e in r.events()] == [0, 0, 0, 1, 2, 2]
    assert after["retries"] == 2


def test_the_console_gets_the_line_and_errors_are_not_echoed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = reporter(None)
    with caplog.at_level(logging.INFO, logger="peagent"):
        r.emit("task", "d1 from here")
        r.emit("plan", "warning: small disk")
        r.emit("failed", "boom", echo=False, error_code="fetch.failed")
    assert [(rec.levelno, rec.getMessage()) for rec in caplog.records] == [
        (logging.INFO, "task: d1 from here"), (logging.WARNING, "plan: warning: small disk")]


def test_progress_events_are_spaced_but_the_console_sees_every_snapshot() -> None:
    out = io.StringIO()
    clock = Clock()
    r = Reporter(None, console=Console(out, tty=True), clock=clock, progress_interval=10.0)
    r.deployment_id = "d1"
    for second in range(0, 25, 2):
        clock.now += 2
        r.progress("write", Snapshot(done=second * MIB, total=24 * MIB, rate=MIB, elapsed=float(second),
                                     final=second == 24))
    events = r.events()
    assert [e["done"] // MIB for e in events] == [0, 10, 20, 24]  # every 10 s, and the last
    assert events[-1]["message"] == "write: 24.0/24.0 MiB (100%) 1.0 MiB/s ETA 0:00:00"
    assert (events[1]["total"], events[1]["rate"], events[1]["eta"]) == (24 * MIB, MIB, 14.0)
    assert out.getvalue().count("\r") == 13


def test_too_large_data_is_dropped_not_the_event(tmp_path: Path) -> None:
    r = reporter(None)
    r.deployment_id = "d1"
    event = r.emit("capture", "captured everything", data={"blob": "x" * (70 << 10)})
    assert event is not None and event["data"] is None
    assert event["message"] == "captured everything (data omitted: too large)"


def test_long_and_undecodable_text_is_made_valid() -> None:
    r = reporter(None)
    r.deployment_id = "d1"
    event = r.emit("apply", "kept /home/\udcff" + "x" * 5000, step="s" * 300)
    assert event is not None
    assert len(event["message"]) == 4000 and event["message"].startswith("kept /home/?x")
    assert len(event["step"]) == 200


def test_an_event_the_server_would_refuse_is_not_journaled(caplog: pytest.LogCaptureFixture) -> None:
    r = reporter(None)
    r.deployment_id = "d1"
    assert r.emit("Bad Phase", "x") is None
    assert r.events() == []
    assert "event field phase: expected a phase name" in caplog.text and "a bug" in caplog.text


def test_a_journal_directory_that_cannot_be_used_keeps_events_in_memory(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    r = reporter(blocked / "run")
    r.deployment_id = "d1"
    r.emit("task", "x")
    assert [e["phase"] for e in r.events()] == ["task"]
    assert "events are kept in memory only" in caplog.text


@pytest.fixture
def status_server() -> Iterator[tuple[str, list[tuple[dict[str, str], dict]]]]:
    got: list[tuple[dict[str, str], dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append((dict(self.headers), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/events", got
    server.shutdown()
    server.server_close()


def test_the_task_status_url_and_token_carry_every_event(tmp_path: Path, status_server,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    url, got = status_server
    caplog.set_level(logging.DEBUG)
    r = reporter(tmp_path, "http://127.0.0.1:9/never-used")  # the PE's peagent.status=, overridden by the task
    r.emit("inventory", "held")
    r.configure(url, Secret(TOKEN))
    r.deployment_id = "d1"
    for i in range(5):
        r.emit("write", f"step {i}")
    assert r.flush(5.0) is True
    posted = [e for _, body in got for e in body["events"]]
    assert [e["seq"] for e in posted] == list(range(1, 7))
    assert posted == r.events()
    assert {h["Authorization"] for h, _ in got} == {f"Bearer {TOKEN}"}
    assert (tmp_path / "events-d1.sent").read_text() == "6\n"
    assert TOKEN not in caplog.text and TOKEN not in repr(r.__dict__)


def test_without_a_url_flush_has_nothing_to_do(tmp_path: Path) -> None:
    r = reporter(tmp_path)
    r.deployment_id = "d1"
    r.emit("done", "ok")
    assert r.flush(0.1) is True and r.sender is None


def test_events_of_a_deploy_that_never_learnt_its_id_are_reported_unposted(caplog: pytest.LogCaptureFixture) -> None:
    r = reporter(None, "http://127.0.0.1:9/status")
    r.emit("inventory", "x")
    r.emit("failed", "no task", echo=False, error_code="task.none")
    assert r.flush(0.1) is False
    assert "2 event(s) from before the task was known were not posted" in caplog.text


def test_events_from_several_threads_get_distinct_consecutive_seqs() -> None:
    r = reporter(None)
    r.deployment_id = "d1"

    def work(n: int) -> None:
        for i in range(50):
            r.emit("retry", f"thread {n} retry {i}", echo=False)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = r.events()
    assert [e["seq"] for e in events] == list(range(1, 201))
    assert [e["retries"] for e in events] == list(range(1, 201))


def test_a_rerun_replays_what_the_first_run_could_not_post(tmp_path: Path, status_server) -> None:
    url, got = status_server
    first = reporter(tmp_path, "http://127.0.0.1:9/down")  # nothing listens: connection refused
    first.deployment_id = "d1"
    first.emit("task", "one")
    first.emit("failed", "two", echo=False, error_code="fetch.failed")
    assert first.flush(0.2) is False
    rerun = reporter(tmp_path, url)
    rerun.deployment_id = "d1"
    rerun.emit("task", "three")
    assert rerun.flush(5.0) is True
    assert [(e["seq"], e["message"]) for _, body in got for e in body["events"]] == [
        (1, "one"), (2, "two"), (3, "three")]
