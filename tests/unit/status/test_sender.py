"""The sender against a real HTTP server on 127.0.0.1: batches in order, the bearer token, outages, refusals."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from peagent.state.model import Secret
from peagent.status.journal import Journal
from peagent.status.sender import Outcome, Sender, backoff_delay, classify, take_batch

TOKEN = "s3cret-token-0123456789"


class StatusServer:
    """A status server whose answer can be changed, or which can be taken down (connections refused)."""

    def __init__(self) -> None:
        self.answer = 200
        self.body = b'{"accepted": 0, "duplicates": 0}'
        self.store_then_fail = False  # store the batch, then answer 500: the answer is "lost"
        self.requests: list[tuple[dict[str, str], list[dict]]] = []
        self.stored: dict[str, dict] = {}  # by event id: what a real server keeps (duplicates ignored)
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/events"

    def up(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append((dict(self.headers), body["events"]))
                if owner.answer == 200 or owner.store_then_fail:
                    for event in body["events"]:
                        owner.stored.setdefault(event["id"], event)
                status = 500 if owner.store_then_fail else owner.answer
                self.send_response(status)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def down(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()  # the port is closed: connections are refused
        self._server = None

    def close(self) -> None:
        if self._server is not None:
            self.down()


@pytest.fixture
def server() -> Iterator[StatusServer]:
    s = StatusServer()
    yield s
    s.close()


def event(seq: int) -> dict:
    return {"schema": 1, "id": f"ev-{seq:06d}", "deployment_id": "d1", "seq": seq, "source": "pe",
            "time": 1.0, "phase": "write", "message": f"step {seq}"}


def sender(server: StatusServer, journal: Journal, **kwargs: object) -> Sender:
    return Sender(server.url, Secret(TOKEN), journal, timeout=(1.0, 2.0), backoff_first=0.02, backoff_max=0.1,
                  **kwargs)  # type: ignore[arg-type]


def wait_for(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_batches_go_in_order_with_the_bearer_token(server: StatusServer) -> None:
    journal = Journal(None, "d1")
    for seq in range(1, 251):
        journal.append(event(seq))
    assert sender(server, journal).send_pending() is True
    assert [len(events) for _, events in server.requests] == [100, 100, 50]
    assert [e["seq"] for _, events in server.requests for e in events] == list(range(1, 251))
    assert {headers["Authorization"] for headers, _ in server.requests} == {f"Bearer {TOKEN}"}
    assert {headers["Content-Type"] for headers, _ in server.requests} == {"application/json"}
    assert journal.sent() == 250


def test_without_a_token_there_is_no_authorization_header(server: StatusServer) -> None:
    journal = Journal(None, "d1")
    journal.append(event(1))
    assert Sender(server.url, None, journal).send_pending()
    assert "Authorization" not in server.requests[0][0]


def test_a_dead_server_then_back_gets_every_event_once_in_order(server: StatusServer, tmp_path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    journal = Journal(tmp_path, "d1")
    s = sender(server, journal)
    s.start()
    for seq in range(1, 6):
        journal.append(event(seq))
        s.notify()
    wait_for(lambda: journal.sent() == 5)
    before = len(server.requests)
    server.down()  # connections refused
    for seq in range(6, 11):
        journal.append(event(seq))
        s.notify()
    time.sleep(0.3)  # several attempts while down, each backed off
    assert journal.sent() == 5
    server.up()
    server.answer = 503  # up, but not taking events
    journal.append(event(11))
    s.notify()
    time.sleep(0.3)
    assert journal.sent() == 5
    server.answer = 200
    assert s.flush(time.monotonic() + 5) is True
    assert sorted(server.stored) == [f"ev-{seq:06d}" for seq in range(1, 12)]
    posted = [e["seq"] for _, events in server.requests for e in events]
    accepted = [e["seq"] for _, events in server.requests for e in events if server.stored[e["id"]] is e]
    assert accepted == list(range(1, 12))  # each once, in seq order
    assert posted[:5] == [1, 2, 3, 4, 5] and posted[-6:] == list(range(6, 12))
    # Every attempt after the outage began replayed from the first unacknowledged event, seq 6.
    assert {events[0]["seq"] for _, events in server.requests[before:]} == {6}
    assert len(server.requests) - before >= 3  # the 503s were attempts too
    assert (tmp_path / "events-d1.sent").read_text() == "11\n"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"status: cannot post to {server.url} (connection refused); the events wait in "
                        f"{tmp_path / 'events-d1.jsonl'} and are sent when it answers"]
    assert TOKEN not in caplog.text


def test_a_batch_whose_answer_was_lost_is_replayed_with_the_same_ids(server: StatusServer) -> None:
    journal = Journal(None, "d1")
    journal.append(event(1))
    journal.append(event(2))
    s = sender(server, journal)
    server.store_then_fail = True
    assert s.send_pending() is False
    server.store_then_fail = False
    assert s.send_pending(force=True) is True
    first, replay = server.requests
    assert [e["id"] for e in first[1]] == [e["id"] for e in replay[1]] == ["ev-000001", "ev-000002"]
    assert len(server.stored) == 2


def test_a_401_is_reported_once_and_not_retried(server: StatusServer, caplog: pytest.LogCaptureFixture) -> None:
    server.answer = 401
    server.body = f'{{"error": "bad token Bearer {TOKEN}"}}'.encode()  # even a server echoing it
    journal = Journal(None, "d1")
    journal.append(event(1))
    s = sender(server, journal)
    s.start()
    s.notify()
    wait_for(lambda: s.refused is not None)
    for seq in range(2, 5):
        journal.append(event(seq))
        s.notify()
    time.sleep(0.2)
    assert s.flush(time.monotonic() + 0.5) is False
    assert len(server.requests) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(f"status: {server.url} refused the events (HTTP 401: ")
    assert "Check the status URL and token" in errors[0]
    assert TOKEN not in caplog.text and "<secret>" in caplog.text
    assert journal.sent() == 0 and len(journal.unsent()) == 4  # still in the journal


def test_a_redirect_is_a_refusal_not_a_get(server: StatusServer) -> None:
    server.answer = 302
    journal = Journal(None, "d1")
    journal.append(event(1))
    s = sender(server, journal)
    assert s.send_pending() is False
    assert s.refused is not None and s.refused.startswith("HTTP 302: redirected to ")
    assert len(server.requests) == 1


def test_flush_gives_up_at_its_deadline_when_the_server_stays_down(server: StatusServer) -> None:
    server.down()
    journal = Journal(None, "d1")
    journal.append(event(1))
    s = sender(server, journal)
    started = time.monotonic()
    assert s.flush(started + 0.5) is False
    assert 0.4 < time.monotonic() - started < 3.0
    assert journal.sent() == 0


def test_while_backing_off_a_pass_returns_at_once(server: StatusServer) -> None:
    server.answer = 503
    journal = Journal(None, "d1")
    journal.append(event(1))
    now = [100.0]
    s = Sender(server.url, None, journal, backoff_first=1.0, backoff_max=60.0, clock=lambda: now[0])
    assert s.send_pending() is False
    assert s.send_pending() is False  # within the first pause: no request
    assert len(server.requests) == 1
    now[0] += 1.0
    assert s.send_pending() is False
    now[0] += 1.0  # the second pause is 2 s
    assert s.send_pending() is False
    assert len(server.requests) == 2


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.DELIVERED), (204, Outcome.DELIVERED), (408, Outcome.DOWN), (429, Outcome.DOWN),
    (500, Outcome.DOWN), (503, Outcome.DOWN), (400, Outcome.REFUSED), (401, Outcome.REFUSED),
    (404, Outcome.REFUSED), (413, Outcome.REFUSED), (301, Outcome.REFUSED),
])
def test_classify(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_delay(n, 1.0, 10.0) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert backoff_delay(500, 1.0, 60.0) == 60.0


def test_a_batch_is_bounded_by_count_and_bytes_but_never_empty() -> None:
    events = [{"seq": i, "message": "x" * 100} for i in range(10)]
    assert len(take_batch(events, max_events=4)) == 4
    size = len(json.dumps(events[0], separators=(",", ":"))) + 1
    assert len(take_batch(events, max_bytes=3 * size)) == 3
    assert len(take_batch(events, max_bytes=1)) == 1
    assert take_batch([]) == []
