"""Finding the task: a named one, the DPs' task API and its decisions, the static files MAC -> UUID -> default."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, HTTPServer, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from peagent import deploy as deploy_module
from peagent.deploy import (
    RETRY_AFTER_DEFAULT,
    Decision,
    DeployOptions,
    dp_of,
    load_task,
    machine_identity,
    task_decision,
    task_lookup_refs,
    task_query,
)
from peagent.errors import FetchError, TargetError, TaskError, TaskRefusedError
from peagent.fetch import NotFoundError
from peagent.inventory import Dmi, Inventory, Nic
from peagent.status import Reporter

UUID = "4C4C4544-0042-3010-8048-B4C04F4E3232"
INV = Inventory(nics=(Nic(name="eth0", mac="52:54:00:00:00:01"), Nic(name="eth1", mac="52:54:00:00:00:02")),
                dmi=Dmi(sys_vendor="QEMU", product_name="Standard PC (Q35)", product_serial="S 1/2",
                        product_uuid=UUID))


def task_doc(name: str) -> str:
    return json.dumps({"version": 1, "id": name, "image": {"url": "x.img", "sha256": "c" * 64}})


def serve_in_thread(server: HTTPServer) -> str:
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture
def static_dp(tmp_path: Path) -> Iterator[str]:
    """A plain static server (as nginx): files under tmp_path, a bare 404 for anything else, api/ included."""
    (tmp_path / "tasks").mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path)))
    yield serve_in_thread(server)
    server.shutdown()
    server.server_close()


class ApiDP:
    """A DP with the task API answering from a script: (status, body) in turn, the last one repeated.
    The answer "drop" closes the connection without a word; static files are served from ``files``."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, object] | str] = []
        self.files: dict[str, str] = {}
        self.asked: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                owner.asked.append(self.path)
                if path == "/api/v1/task":
                    answer = owner.answers.pop(0) if len(owner.answers) > 1 else owner.answers[0]
                    if answer == "drop":
                        self.close_connection = True
                        self.connection.close()
                        return
                    status, body = answer  # type: ignore[misc]
                    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                elif path.lstrip("/") in owner.files:
                    status, data = 200, owner.files[path.lstrip("/")].encode()
                else:
                    status, data = 404, b"<html>not found</html>"
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = serve_in_thread(self.server)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api_dp() -> Iterator[ApiDP]:
    dp = ApiDP()
    yield dp
    dp.close()


class FakeTime:
    """clock and sleep: a sleep advances the clock at once (tests never sleep for real)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# --- the static files --------------------------------------------------------------------------------------------


def test_lookup_order_is_each_mac_then_the_uuid_then_default() -> None:
    assert task_lookup_refs(INV) == ["tasks/52-54-00-00-00-01.json", "tasks/52-54-00-00-00-02.json",
                                     "tasks/4c4c4544-0042-3010-8048-b4c04f4e3232.json", "tasks/default.json"]
    assert task_lookup_refs(Inventory()) == ["tasks/default.json"]


def test_a_machine_task_wins_over_the_uuid_and_the_default(static_dp: str, tmp_path: Path) -> None:
    (tmp_path / "tasks" / "default.json").write_text(task_doc("default"))
    assert load_task(None, (static_dp,), INV)[0].deployment_id == "default"
    (tmp_path / "tasks" / "4c4c4544-0042-3010-8048-b4c04f4e3232.json").write_text(task_doc("by-uuid"))
    assert load_task(None, (static_dp,), INV)[0].deployment_id == "by-uuid"
    (tmp_path / "tasks" / "52-54-00-00-00-02.json").write_text(task_doc("second-nic"))
    task, source = load_task(None, (static_dp,), INV)
    assert task.deployment_id == "second-nic"
    assert source == static_dp + "tasks/52-54-00-00-00-02.json"


def test_no_task_anywhere(static_dp: str) -> None:
    with pytest.raises(NotFoundError, match=r"no task for this machine on the DPs \(looked for tasks/52-54.*"
                                            r"tasks/4c4c4544-.*tasks/default.json\)"):
        load_task(None, (static_dp,), INV)


def test_a_named_task_that_is_missing_is_not_replaced_by_the_default(static_dp: str, tmp_path: Path) -> None:
    (tmp_path / "tasks" / "default.json").write_text(task_doc("default"))
    with pytest.raises(NotFoundError):
        load_task("tasks/special.json", (static_dp,), INV)


def test_a_local_task_file(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text(task_doc("local"))
    assert load_task(str(tmp_path / "t.json"), (), INV)[0].deployment_id == "local"


def test_neither_task_nor_dps() -> None:
    with pytest.raises(TaskError) as info:
        load_task(None, (), INV)
    assert info.value.field == "peagent.task"


# --- the task API ----------------------------------------------------------------------------------------------------


def test_the_query_names_the_machine() -> None:
    query = parse_qs(task_query(INV))
    assert query == {"mac": ["52:54:00:00:00:01", "52:54:00:00:00:02"], "uuid": [UUID.lower()], "serial": ["S 1/2"],
                     "vendor": ["QEMU"], "model": ["Standard PC (Q35)"]}
    assert task_query(Inventory(nics=(Nic(name="e", mac="AA:BB:CC:DD:EE:FF"),))) == "mac=aa%3Abb%3Acc%3Add%3Aee%3Aff"


def test_the_api_gives_the_task(api_dp: ApiDP) -> None:
    api_dp.answers = [(200, task_doc("from-api"))]
    api_dp.files["tasks/default.json"] = task_doc("default")
    task, source = load_task(None, (api_dp.url,), INV)
    assert task.deployment_id == "from-api"
    assert source == api_dp.url + "api/v1/task?" + task_query(INV)
    assert api_dp.asked == ["/api/v1/task?" + task_query(INV)]


def test_nothing_to_do_is_a_decision_not_a_fallback(api_dp: ApiDP) -> None:
    api_dp.answers = [(404, {"decision": "none", "reason": "no rule matches and unknown is refuse"})]
    api_dp.files["tasks/default.json"] = task_doc("default")
    with pytest.raises(TaskRefusedError) as info:
        load_task(None, (api_dp.url,), INV)
    assert (info.value.code, info.value.decision, info.value.exit_status) == ("task.none", "none", 10)
    assert str(info.value) == (f"{api_dp.url} has no task for this machine: nothing to do (no rule matches and "
                               "unknown is refuse)")
    assert len(api_dp.asked) == 1  # the default file was not looked at


def test_a_plain_404_means_no_api_here_so_the_files_are_looked_for(api_dp: ApiDP) -> None:
    api_dp.answers = [(404, "<html>not found</html>")]
    api_dp.files["tasks/default.json"] = task_doc("default")
    task, source = load_task(None, (api_dp.url,), INV)
    assert task.deployment_id == "default" and source == api_dp.url + "tasks/default.json"
    assert [urlsplit(p).path for p in api_dp.asked] == [
        "/api/v1/task", "/tasks/52-54-00-00-00-01.json", "/tasks/52-54-00-00-00-02.json",
        "/tasks/4c4c4544-0042-3010-8048-b4c04f4e3232.json", "/tasks/default.json"]


@pytest.mark.parametrize("decision", ["refused", "cancelled"])
def test_refused_and_cancelled_are_typed_errors(api_dp: ApiDP, decision: str) -> None:
    api_dp.answers = [(403, {"decision": decision})]
    with pytest.raises(TaskRefusedError) as info:
        load_task(None, (api_dp.url,), INV)
    assert info.value.code == f"task.{decision}"
    assert str(info.value) == f"{api_dp.url}: this machine's deployment is {decision}"


def test_pending_waits_and_asks_again(api_dp: ApiDP) -> None:
    api_dp.answers = [(409, {"decision": "pending", "retry_after": 5}),
                      (409, {"decision": "postponed", "retry_after": 7.5}), (200, task_doc("approved"))]
    fake = FakeTime()
    reporter = Reporter(None)
    task, _ = load_task(None, (api_dp.url,), INV, reporter=reporter, sleep=fake.sleep, clock=fake.clock)
    assert task.deployment_id == "approved"
    assert fake.slept == [5.0, 7.5]
    assert [(e["phase"], e["message"]) for e in reporter.events()] == [
        ("waiting", f"{api_dp.url}: the deployment is pending; asking again in 5 s"),
        ("waiting", f"{api_dp.url}: the deployment is postponed; asking again in 8 s")]


def test_the_wait_for_approval_is_bounded(api_dp: ApiDP) -> None:
    api_dp.answers = [(409, {"decision": "pending", "retry_after": 60})]
    fake = FakeTime()
    with pytest.raises(TaskRefusedError) as info:
        load_task(None, (api_dp.url,), INV, wait=300, sleep=fake.sleep, clock=fake.clock)
    assert info.value.code == "task.pending"
    assert fake.slept == [60.0] * 5 and fake.now == 300
    assert "still pending after 300 s (the agent waits up to 300 s); approve it on the DP" in str(info.value)


def test_a_dp_that_stops_answering_while_we_wait_is_waited_for_not_replaced(api_dp: ApiDP) -> None:
    api_dp.answers = [(409, {"decision": "pending", "retry_after": 10}), "drop", "drop", "drop",
                      (200, task_doc("approved"))]
    api_dp.files["tasks/default.json"] = task_doc("default")
    fake = FakeTime()
    task, _ = load_task(None, (api_dp.url,), INV, sleep=fake.sleep, clock=fake.clock)
    assert task.deployment_id == "approved"
    assert not any("/tasks/" in p for p in api_dp.asked)


def test_no_dp_reachable_is_a_fetch_error_naming_them() -> None:
    fake = FakeTime()
    with pytest.raises(FetchError) as info:
        load_task(None, ("http://127.0.0.1:9/",), INV, sleep=fake.sleep, clock=fake.clock)
    assert str(info.value) == ("cannot reach any DP to ask for this machine's task (http://127.0.0.1:9/: "
                               "http://127.0.0.1:9/api/v1/task: connection refused)")
    assert len(fake.slept) == 2  # three tries


def test_the_first_dp_that_decides_wins(api_dp: ApiDP, static_dp: str, tmp_path: Path) -> None:
    (tmp_path / "tasks" / "default.json").write_text(task_doc("static-default"))
    api_dp.answers = [(200, task_doc("from-api"))]
    assert load_task(None, (static_dp, api_dp.url), INV)[0].deployment_id == "from-api"


@pytest.mark.parametrize(("status", "body", "decision"), [
    (200, b"{}", Decision("task")),
    (404, b'{"decision": "none"}', Decision("none", "none")),
    (404, b'{"decision": "none", "message": "retired"}', Decision("none", "none", detail="retired")),
    (404, b"not found", Decision("static")),
    (404, b'{"error": "no such file"}', Decision("static")),
    (409, b'{"decision": "pending", "retry_after": 12}', Decision("wait", "pending", 12.0)),
    (409, b'{"decision": "postponed", "retry_after": 99999}', Decision("wait", "postponed", 600.0)),
    (409, b'{"decision": "pending", "retry_after": 0}', Decision("wait", "pending", 1.0)),
    (409, b'{"decision": "pending", "retry_after": "soon"}', Decision("wait", "pending", RETRY_AFTER_DEFAULT)),
    (409, b'{"decision": "pending"}', Decision("wait", "pending", RETRY_AFTER_DEFAULT)),
    (409, b"conflict", Decision("unexpected", detail="HTTP 409")),
    (403, b'{"decision": "refused"}', Decision("refused", "refused")),
    (403, b'{"decision": "cancelled", "reason": "by admin"}', Decision("refused", "cancelled", detail="by admin")),
    (403, b"<html>forbidden</html>", Decision("static")),
    (401, b'{"error": "token"}', Decision("unexpected", detail="HTTP 401: token")),
])
def test_task_decision(status: int, body: bytes, decision: Decision) -> None:
    assert task_decision(status, body) == decision


def test_machine_identity_and_dp() -> None:
    assert machine_identity(INV) == {"macs": ["52:54:00:00:00:01", "52:54:00:00:00:02"], "uuid": UUID.lower(),
                                     "serial": "S 1/2", "vendor": "QEMU", "model": "Standard PC (Q35)"}
    assert dp_of("http://dp2/tasks/default.json", ("http://dp1/", "http://dp2")) == "http://dp2"
    assert dp_of("/srv/task.json", ("http://dp1/",)) == "http://dp1/"
    assert dp_of("/srv/task.json", ()) is None


# --- a deploy's events, end to end -------------------------------------------------------------------------------


class EventSink:
    """A status server that keeps what it is posted."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], list[dict]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.posts.append((dict(self.headers), body["events"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = serve_in_thread(self.server) + "api/v1/events"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_failed_deploy_posts_every_event_with_the_tasks_token_before_it_returns(
        api_dp: ApiDP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    sink = EventSink()
    token = "deploy-token-0123456789"
    doc = json.loads(task_doc("wave-9"))
    doc["status"] = {"url": sink.url, "token": token}
    api_dp.answers = [(200, json.dumps(doc))]
    monkeypatch.setattr(deploy_module, "collect", lambda: INV)  # a machine without disks: the plan refuses
    options = DeployOptions(task=None, dps=(api_dp.url,), status="http://127.0.0.1:9/pe-status",
                            journal_dir=tmp_path / "run", flush_seconds=5.0)
    try:
        with pytest.raises(TargetError) as info:
            deploy_module.deploy(options)
    finally:
        sink.close()
    posted = [e for _, events in sink.posts for e in events]
    assert [(e["seq"], e["phase"]) for e in posted] == [(1, "inventory"), (2, "task"), (3, "failed")]
    assert {h["Authorization"] for h, _ in sink.posts} == {f"Bearer {token}"}
    failed = posted[-1]
    assert failed["error"] == {"code": info.value.code, "message": str(info.value)} and failed["level"] == "error"
    assert {e["deployment_id"] for e in posted} == {"wave-9"}
    assert [e["dp"] for e in posted] == [None, api_dp.url, api_dp.url]  # the inventory came before the task
    assert posted[0]["machine"] == machine_identity(INV)
    journal = [json.loads(line) for line in (tmp_path / "run" / "events-wave-9.jsonl").read_text().splitlines()]
    assert journal == posted and (tmp_path / "run" / "events-wave-9.sent").read_text() == "3\n"
    assert token not in caplog.text
