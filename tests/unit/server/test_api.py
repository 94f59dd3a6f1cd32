"""The JSON API over real HTTP, against ``peagent serve`` in a thread on 127.0.0.1: assignment and
tasks, ingest with its tokens and limits, the read endpoints, administration, and refusals of
malformed requests, after which the server still answers."""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from peagent.server import api as api_module
from peagent.server import ondisk
from peagent.server.dp import DPServer
from tests.support.dp import api_events, embedded_dp

ADMIN = "admin-0123456789abcdef"
LAB_MAC = "52:54:00:12:34:56"
DELL_MAC = "aa:bb:cc:00:00:01"
OTHER_MAC = "aa:bb:cc:00:00:99"
STATIC_TOKEN = "static-token-0123456789"
CONFIG = {
    "unknown": "default",
    "default_task": "tasks/default.json",
    "groups": {"lab": [LAB_MAC]},
    "rules": [
        {"name": "lab", "match": {"group": "lab"}, "task": "tasks/lab.json", "once": True},
        {"name": "dell", "match": {"vendor": "dell*"}, "task": "tasks/dell.json", "approve": True},
    ],
    "retry_after": 5,
}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "dp"
    (root / "tasks").mkdir(parents=True)
    for name in ("lab", "dell", "default"):
        (root / "tasks" / f"{name}.json").write_text(json.dumps({"version": 1, "id": name, "after": "reboot"}))
    (root / "tasks" / "static.json").write_text(json.dumps(
        {"version": 1, "id": "static-1", "status": {"url": "http://elsewhere/api/v1/events", "token": STATIC_TOKEN}}))
    (tmp_path / "serve.json").write_text(json.dumps(CONFIG))
    return root


@pytest.fixture
def dp(site: Path, tmp_path: Path) -> Iterator[DPServer]:
    with embedded_dp(site, db=tmp_path / "status.sqlite", config=tmp_path / "serve.json", admin_token=ADMIN) as s:
        yield s


def url(server: DPServer, path: str) -> str:
    return server.url.rstrip("/") + path


def get_task(server: DPServer, **query: Any) -> requests.Response:
    return requests.get(url(server, "/api/v1/task"), params=query, timeout=5)


def post(server: DPServer, body: object, token: str | None, path: str = "/api/v1/events") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url(server, path), json=body, headers=headers, timeout=5)


def admin(server: DPServer, key: str, action: str, body: object = None, token: str | None = ADMIN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url(server, f"/api/v1/machines/{key}/{action}"), json=body, headers=headers, timeout=5)


def raw(server: DPServer, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A request sent exactly as written (requests would normalise the path)."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    conn.close()
    return out


def event(deployment: str, seq: int, phase: str = "write", source: str = "pe", **fields: Any) -> dict[str, Any]:
    return {"schema": 1, "id": f"event-{deployment}-{source}-{seq}", "deployment_id": deployment, "seq": seq,
            "source": source, "time": time.time(), "phase": phase, "message": f"{phase} {seq}", **fields}


def still_serving(server: DPServer) -> None:
    r = requests.get(url(server, "/api/v1/machines"), timeout=5)
    assert r.status_code == 200 and "machines" in r.json()


def test_a_task_by_the_rules_with_its_id_status_url_and_token(dp: DPServer) -> None:
    r = get_task(dp, mac=LAB_MAC, model="ThinkPad")
    assert r.status_code == 200
    task = r.json()
    assert task["id"].startswith("lab-") and len(task["id"]) <= 64
    assert task["after"] == "reboot"
    assert task["status"]["url"] == url(dp, "/api/v1/events")
    assert len(task["status"]["token"]) >= 16
    machines = requests.get(url(dp, "/api/v1/machines"), timeout=5).json()["machines"]
    [machine] = machines
    assert (machine["key"], machine["model"], machine["state"]) == (LAB_MAC, "ThinkPad", "none")
    d = machine["deployment"]
    assert (d["id"], d["rule"], d["task"], d["status"], d["phase"]) == (task["id"], "lab", "tasks/lab.json",
                                                                         "running", "task")
    [server_event] = requests.get(url(dp, f"/api/v1/deployments/{task['id']}/events"), timeout=5).json()["events"]
    assert (server_event["source"], server_event["phase"], server_event["machine"]["macs"]) == ("server", "task",
                                                                                               [LAB_MAC])


def test_a_pe_that_asks_again_mid_deploy_continues_the_same_deployment(dp: DPServer) -> None:
    first = get_task(dp, mac=LAB_MAC).json()
    post(dp, event(first["id"], 1, "boot"), first["status"]["token"])
    second = get_task(dp, mac=LAB_MAC).json()
    assert second["id"] == first["id"]
    assert second["status"]["token"] != first["status"]["token"]
    for token in (first["status"]["token"], second["status"]["token"]):  # the earlier PE may still be flushing
        assert post(dp, event(first["id"], 2), token).status_code == 200


def test_events_are_stored_replays_ignored_and_the_summary_follows(dp: DPServer) -> None:
    task = get_task(dp, mac=LAB_MAC).json()
    token, dep = task["status"]["token"], task["id"]
    batch = {"events": [event(dep, 1, "boot"), event(dep, 2, "write", done=50, total=100, rate=10.0, eta=5.0)]}
    r = post(dp, batch, token)
    assert (r.status_code, r.json()) == (200, {"accepted": 2, "duplicates": 0})
    assert post(dp, batch, token).json() == {"accepted": 0, "duplicates": 2}
    assert post(dp, event(dep, 3, "done"), token).json() == {"accepted": 1, "duplicates": 0}
    summary = requests.get(url(dp, f"/api/v1/deployments/{dep}"), timeout=5).json()
    assert (summary["status"], summary["phase"], summary["events"]) == ("done", "done", 4)
    timeline = requests.get(url(dp, f"/api/v1/deployments/{dep}/events"), timeout=5).json()
    assert [(e["source"], e["phase"]) for e in timeline["events"]] == [
        ("server", "task"), ("pe", "boot"), ("pe", "write"), ("pe", "done")]
    assert timeline["deployment"] == summary
    # A once rule that completed is not handed out again.
    again = get_task(dp, mac=LAB_MAC)
    assert again.status_code == 404 and again.json()["decision"] == "none"
    assert [e["phase"] for e in api_events(dp.url)] == ["task", "boot", "write", "done"]


def test_tokens_are_checked(dp: DPServer) -> None:
    lab = get_task(dp, mac=LAB_MAC).json()
    other = get_task(dp, mac=OTHER_MAC).json()
    missing = post(dp, event(lab["id"], 1), None)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert post(dp, event(lab["id"], 1), "wrong-token-0123456789").status_code == 401
    assert post(dp, event(lab["id"], 1), other["status"]["token"]).status_code == 401
    r = requests.post(url(dp, "/api/v1/events"), json=event(lab["id"], 1), timeout=5,
                      headers={"Authorization": f"Basic {lab['status']['token']}"})
    assert r.status_code == 401
    assert requests.get(url(dp, f"/api/v1/deployments/{lab['id']}"), timeout=5).json()["events"] == 1  # server's


def test_a_static_tasks_token_is_accepted_for_its_id(dp: DPServer, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine = {"macs": [OTHER_MAC], "model": "Box"}
    assert post(dp, event("static-1", 1, "boot", machine=machine), STATIC_TOKEN).json()["accepted"] == 1
    assert post(dp, event("static-1", 2), "wrong-token-0123456789").status_code == 401
    assert post(dp, event("static-2", 1), STATIC_TOKEN).status_code == 401  # the token of another id
    monkeypatch.setattr(ondisk, "STATIC_RESCAN", 0.0)
    (site / "tasks" / "more").mkdir()
    (site / "tasks" / "more" / "new.json").write_text(json.dumps({"id": "static-2",
                                                                   "status": {"token": "another-token-0123456789"}}))
    assert post(dp, event("static-2", 1, machine=machine), "another-token-0123456789").status_code == 200
    m = requests.get(url(dp, f"/api/v1/machines/{OTHER_MAC}"), timeout=5).json()
    assert [d["id"] for d in m["deployments"]] == ["static-2", "static-1"]
    assert m["deployments"][1]["rule"] is None and m["machine"]["model"] == "Box"


def test_the_old_status_path_takes_the_old_first_boot_report(dp: DPServer) -> None:
    task = get_task(dp, mac=LAB_MAC).json()
    report = {"phase": "complete", "message": "first boot complete", "deployment_id": task["id"],
              "machine": {"hostname": "ws1", "machine_id": "abc", "macs": [LAB_MAC]}, "time": time.time()}
    assert post(dp, report, None, "/status").status_code == 401
    old_pe = {"phase": "fetch", "message": "HTTP 500", "deployment_id": task["id"], "machine": {},
              "time": time.time(), "done": None, "total": None, "rate": None, "eta": None,
              "error_code": "fetch.failed", "data": None}
    assert post(dp, old_pe, task["status"]["token"], "/status").status_code == 200
    summary = requests.get(url(dp, f"/api/v1/deployments/{task['id']}"), timeout=5).json()
    assert (summary["status"], summary["error"]) == ("failed", {"code": "fetch.failed", "message": "HTTP 500"})
    r = post(dp, report, task["status"]["token"], "/status")
    assert (r.status_code, r.json()) == (200, {"accepted": 1, "duplicates": 0})
    assert post(dp, report, task["status"]["token"], "/status").json() == {"accepted": 0, "duplicates": 1}
    summary = requests.get(url(dp, f"/api/v1/deployments/{task['id']}"), timeout=5).json()
    assert summary["status"] == "complete"  # the first boot's report is the newest word
    machine = requests.get(url(dp, f"/api/v1/machines/{LAB_MAC}"), timeout=5).json()["machine"]
    assert machine["hostname"] == "ws1"
    # The new path takes schema 1 only.
    r = post(dp, report, task["status"]["token"])
    assert r.status_code == 400 and r.json()["field"] == "schema"


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"events": "nope"}, 400, "events"),
    ({"events": []}, 400, "events"),
    ({"events": [1]}, 400, "events[0].deployment_id"),
    ([1, 2], 400, "body"),
    ({"events": [{}], "more": 1}, 400, "more"),
])
def test_malformed_batches_name_the_field(dp: DPServer, body: object, status: int, field: str) -> None:
    r = post(dp, body, "some-token-0123456789")
    assert (r.status_code, r.json()["field"]) == (status, field)
    still_serving(dp)


def test_deeply_nested_json_is_a_400_not_a_crash(dp: DPServer) -> None:
    task = get_task(dp, mac=LAB_MAC).json()
    headers = {"Authorization": f"Bearer {task['status']['token']}"}
    deep = b"[" * 100_000 + b"]" * 100_000
    r = requests.post(url(dp, "/api/v1/events"), data=deep, headers=headers, timeout=5)
    assert (r.status_code, r.json()["field"]) == (400, "body")
    data = "{}"
    for _ in range(2000):
        data = '{"a":' + data + "}"
    text = json.dumps(event(task["id"], 1)).replace('"schema"', f'"data": {data}, "schema"')
    r = requests.post(url(dp, "/api/v1/events"), data=text, headers=headers, timeout=5)
    assert r.status_code == 400
    still_serving(dp)


def test_bad_events_name_the_field_and_nothing_of_the_batch_is_stored(dp: DPServer) -> None:
    task = get_task(dp, mac=LAB_MAC).json()
    token, dep = task["status"]["token"], task["id"]

    def refused(events: list[dict[str, Any]]) -> str:
        r = post(dp, {"events": events}, token)
        assert r.status_code == 400, r.text
        return r.json()["field"]

    no_seq = event(dep, 2)
    del no_seq["seq"]
    assert refused([event(dep, 1), no_seq]) == "events[1].seq"
    assert refused([event(dep, 1), {**event(dep, 2), "colour": "red"}]) == "events[1].colour"
    assert refused([event(dep, 1), event("someone-else", 2)]) == "events[1].deployment_id"
    assert refused([event(dep, 1, source="server")]) == "events[0].source"
    assert refused([event(dep, 1, machine={"macs": ["nope"]})]) == "events[0].machine.macs[0]"
    r = requests.post(url(dp, "/api/v1/events"), data=b"{not json", timeout=5,
                      headers={"Authorization": f"Bearer {token}"})
    assert (r.status_code, r.json()["field"]) == (400, "body")
    assert requests.get(url(dp, f"/api/v1/deployments/{dep}"), timeout=5).json()["events"] == 1  # the server's


def test_limits_413_and_the_server_keeps_running(dp: DPServer) -> None:
    task = get_task(dp, mac=LAB_MAC).json()
    token, dep = task["status"]["token"], task["id"]
    many = {"events": [event(dep, i) for i in range(501)]}
    r = post(dp, many, token)
    assert (r.status_code, r.json()["field"]) == (413, "events")
    # Refused on its Content-Length, before a byte of the body is read.
    conn = http.client.HTTPConnection(*dp.server_address[:2], timeout=5)
    conn.putrequest("POST", "/api/v1/events")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Length", str(api_module.MAX_EVENTS_BODY + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["field"] == "body"
    conn.close()
    status, _headers, _body = raw(dp, "POST", "/api/v1/events", b"{}",
                                 {"Authorization": f"Bearer {token}", "Transfer-Encoding": "chunked"})
    assert status == 411
    assert post(dp, {"events": [event(dep, i) for i in range(1, 501)]}, token).json()["accepted"] == 500
    still_serving(dp)


def test_unknown_machines_under_both_policies(dp: DPServer, tmp_path: Path) -> None:
    r = get_task(dp, mac=OTHER_MAC)
    assert r.status_code == 200 and r.json()["id"].startswith("default-")
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({**CONFIG, "unknown": "refuse"}))  # read again without a restart
    r = get_task(dp, mac="aa:bb:cc:00:00:98")
    assert r.status_code == 403
    assert r.json() == {"decision": "refused", "machine": "aa:bb:cc:00:00:98",
                        "reason": "no rule matches this machine and unknown machines are refused"}
    config.write_text("{broken")  # a broken edit keeps the last good configuration
    assert get_task(dp, mac="aa:bb:cc:00:00:98").status_code == 403
    assert get_task(dp, mac=LAB_MAC).status_code == 200


def test_without_assignments_the_machines_own_task_file_is_handed_out(site: Path) -> None:
    (site / "tasks" / "52-54-00-12-34-56.json").write_text(json.dumps({"version": 1, "id": "ws42"}))
    with embedded_dp(site) as server:
        own = get_task(server, mac=["aa:bb:cc:00:00:42", LAB_MAC])  # the second MAC has a file
        assert own.status_code == 200 and own.json()["id"].startswith("ws42-")
        assert get_task(server, mac=OTHER_MAC).json()["id"].startswith("default-")
        again = get_task(server, mac=["aa:bb:cc:00:00:42", LAB_MAC])
        assert again.json()["id"] == own.json()["id"]  # the same machine, its deployment continued
        (site / "tasks" / "default.json").unlink()
        r = get_task(server, mac="aa:bb:cc:00:00:43")
        assert r.status_code == 404 and r.json()["decision"] == "none"
        assert "tasks/aa-bb-cc-00-00-43.json" in r.json()["reason"]


def test_malformed_identities_are_400(dp: DPServer) -> None:
    for query, field in (({"mac": "52:54:00"}, "mac"), ({"uuid": "x"}, "uuid"), ({"serial": "a"}, "mac"),
                         ({"mac": LAB_MAC, "colour": "red"}, "colour")):
        r = get_task(dp, **query)
        assert (r.status_code, r.json()["field"]) == (400, field), query
    still_serving(dp)


def test_approval_postponement_and_cancellation(dp: DPServer) -> None:
    pending = get_task(dp, mac=DELL_MAC, vendor="Dell Inc.")
    assert pending.status_code == 409
    assert pending.json()["decision"] == "pending" and pending.json()["retry_after"] == 5
    assert pending.headers["Retry-After"] == "5"
    machine = requests.get(url(dp, f"/api/v1/machines/{DELL_MAC}"), timeout=5).json()["machine"]
    assert machine["state"] == "pending" and machine["deployment"] is None

    assert admin(dp, DELL_MAC, "approve", token=None).status_code == 401
    assert admin(dp, DELL_MAC, "approve", token="wrong-admin-0123456789").status_code == 401
    assert admin(dp, OTHER_MAC, "approve").status_code == 404
    assert admin(dp, DELL_MAC, "postpone", {"seconds": 0}).json()["field"] == "seconds"
    assert admin(dp, DELL_MAC, "postpone", {"until": 1}).json()["field"] == "until"
    assert admin(dp, DELL_MAC, "postpone", {"later": 1}).status_code == 400
    r = admin(dp, DELL_MAC, "postpone", {"seconds": 3})
    assert r.status_code == 200 and r.json()["machine"]["state"] == "postponed"
    postponed = get_task(dp, mac=DELL_MAC, vendor="Dell Inc.")
    assert postponed.status_code == 409 and postponed.json()["decision"] == "postponed"
    assert 1 <= postponed.json()["retry_after"] <= 3 and postponed.json()["until"] > time.time()

    r = admin(dp, DELL_MAC, "approve")
    assert r.status_code == 200 and r.json()["machine"]["state"] == "approved"
    task = get_task(dp, mac=DELL_MAC, vendor="Dell Inc.")
    assert task.status_code == 200 and task.json()["id"].startswith("dell-")
    post(dp, event(task.json()["id"], 1, "write"), task.json()["status"]["token"])

    r = admin(dp, DELL_MAC, "cancel")
    assert r.status_code == 200 and r.json()["machine"]["state"] == "cancelled"
    assert r.json()["machine"]["deployment"]["status"] == "cancelled"
    cancelled = get_task(dp, mac=DELL_MAC, vendor="Dell Inc.")
    assert cancelled.status_code == 403 and cancelled.json()["decision"] == "cancelled"
    # The approval was used by the deployment it let through: approving again is needed, and enough.
    admin(dp, DELL_MAC, "approve")
    again = get_task(dp, mac=DELL_MAC, vendor="Dell Inc.")
    assert again.status_code == 200 and again.json()["id"] != task.json()["id"]


def test_without_an_admin_token_administration_is_off(site: Path) -> None:
    with embedded_dp(site) as server:
        get_task(server, mac=LAB_MAC)
        r = admin(server, LAB_MAC, "approve")
        assert r.status_code == 403 and "no admin token configured" in r.json()["error"]


def test_the_task_of_a_running_deployment_by_its_id(dp: DPServer) -> None:
    task = get_task(dp, mac=LAB_MAC).json()
    r = requests.get(url(dp, f"/api/v1/tasks/{task['id']}"), timeout=5)
    assert r.status_code == 200
    again = r.json()
    assert again["id"] == task["id"] and again["status"]["token"] != task["status"]["token"]
    assert post(dp, event(task["id"], 1, "done"), again["status"]["token"]).status_code == 200
    r = requests.get(url(dp, f"/api/v1/tasks/{task['id']}"), timeout=5)
    assert r.status_code == 404 and "done" in r.json()["error"]
    assert requests.get(url(dp, "/api/v1/tasks/no-such-1"), timeout=5).status_code == 404


def test_the_task_url_follows_the_host_asked_or_the_public_url(site: Path) -> None:
    with embedded_dp(site, public_url="http://dp.example:8080/") as server:
        assert get_task(server, mac=LAB_MAC).json()["status"]["url"] == "http://dp.example:8080/api/v1/events"
    with embedded_dp(site) as server:
        r = requests.get(url(server, "/api/v1/task"), params={"mac": LAB_MAC}, headers={"Host": "10.0.2.2:8080"},
                         timeout=5)
        assert r.json()["status"]["url"] == "http://10.0.2.2:8080/api/v1/events"
        r = requests.get(url(server, "/api/v1/task"), params={"mac": OTHER_MAC}, headers={"Host": "a b${x}"},
                         timeout=5)
        assert r.json()["status"]["url"] == url(server, "/api/v1/events")  # a strange Host is not echoed


def test_deployments_paging_and_parameters(dp: DPServer) -> None:
    ids = [get_task(dp, mac=f"aa:bb:cc:00:01:{i:02x}").json()["id"] for i in range(5)]
    r = requests.get(url(dp, "/api/v1/deployments"), params={"limit": 2}, timeout=5).json()
    assert [d["id"] for d in r["deployments"]] == ids[:2:-1] and r["next"] is not None
    r2 = requests.get(url(dp, "/api/v1/deployments"), params={"limit": 2, "before": r["next"]}, timeout=5).json()
    assert [d["id"] for d in r2["deployments"]] == [ids[2], ids[1]]
    running = requests.get(url(dp, "/api/v1/deployments"), params={"status": "running"}, timeout=5).json()
    assert len(running["deployments"]) == 5 and running["next"] is None
    for params, field in (({"status": "bogus"}, "status"), ({"limit": 0}, "limit"), ({"limit": "x"}, "limit"),
                          ({"limit": 501}, "limit"), ({"before": "-1"}, "before"),
                          ({"limit": ["1", "2"]}, "limit")):
        r = requests.get(url(dp, "/api/v1/deployments"), params=params, timeout=5)
        assert (r.status_code, r.json()["field"]) == (400, field), params


def test_errors_endpoint_groups_failures(dp: DPServer) -> None:
    task = get_task(dp, mac=LAB_MAC, model="T14").json()
    post(dp, event(task["id"], 1, "fetch", dp="http://dp1", error={"code": "fetch.failed", "message": "HTTP 404"}),
         task["status"]["token"])
    errors = requests.get(url(dp, "/api/v1/errors"), timeout=5).json()
    assert errors == {"by_code": [{"code": "fetch.failed", "count": 1, "message": "HTTP 404",
                                   "deployments": [task["id"]]}],
                      "by_model": [{"model": "T14", "code": "fetch.failed", "count": 1}],
                      "by_dp": [{"dp": "http://dp1", "code": "fetch.failed", "count": 1}]}


@pytest.mark.parametrize("path", [
    "/api/v1/deployments/..", "/api/v1/deployments/%2e%2e", "/api/v1/deployments/%2E%2E/events",
    "/api/v1/../../etc/passwd", "/api/v1/machines/%00", "/api/v1/deployments/a%2fb", "/api/v1/machines/..%2f..",
    "/ui/..%2f..%2fetc%2fpasswd",
])
def test_traversal_is_refused(dp: DPServer, path: str) -> None:
    status, headers, body = raw(dp, "GET", path)
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["field"] == "path"
    still_serving(dp)


@pytest.mark.parametrize(("path", "field"), [
    ("/api/v1/deployments/" + "x" * 65, "id"), ("/api/v1/deployments/a%20b/events", "id"),
    ("/api/v1/machines/not-a-key", "key"), ("/api/v1/machines/52:54:00:12:34/approve", "key"),
])
def test_path_parameters_are_validated(dp: DPServer, path: str, field: str) -> None:
    status, _headers, body = raw(dp, "GET" if "approve" not in path else "POST", path)
    assert status == 400 and json.loads(body)["field"] == field


def test_unknown_paths_404_and_wrong_methods_405_as_json(dp: DPServer, site: Path) -> None:
    status, headers, body = raw(dp, "GET", "/api/v1/nothing")
    assert status == 404 and "error" in json.loads(body)
    status, headers, body = raw(dp, "DELETE", "/api/v1/machines")
    assert status == 405 and headers["allow"] == "GET, HEAD" and "error" in json.loads(body)
    status, headers, _ = raw(dp, "GET", "/api/v1/events")
    assert status == 405 and headers["allow"] == "POST"
    status, _headers, _ = raw(dp, "PUT", "/api/v1/events", b"x", {"Authorization": "Bearer " + "x" * 20})
    assert status == 405 and not (site / "api").exists()
    assert raw(dp, "GET", f"/api/v1/machines/{LAB_MAC.upper()}")[0] == 404  # a key in upper case is the same key
    still_serving(dp)


def test_head_openapi_dashboard_and_files_beside_the_api(dp: DPServer, site: Path) -> None:
    status, headers, body = raw(dp, "HEAD", "/api/v1/machines")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    doc = requests.get(url(dp, "/api/v1/openapi.json"), timeout=5).json()
    assert doc["openapi"].startswith("3.0") and "/api/v1/events" in doc["paths"]
    page = requests.get(dp.url, timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert requests.get(url(dp, "/ui/nothing.js"), timeout=5).status_code == 404
    assert requests.get(url(dp, "/tasks/lab.json"), timeout=5).json()["id"] == "lab"  # still a file server


def test_no_token_reaches_the_log(dp: DPServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    task = get_task(dp, mac=LAB_MAC).json()
    token = task["status"]["token"]
    post(dp, event(task["id"], 1, "boot"), token)
    post(dp, event(task["id"], 2, "boot"), token[:-1] + "x")
    post(dp, event("static-1", 1), STATIC_TOKEN)
    admin(dp, LAB_MAC, "approve", token=ADMIN[:-1] + "x")
    admin(dp, LAB_MAC, "postpone", {"seconds": 60})
    assert caplog.records  # the requests were logged
    for secret in (token, STATIC_TOKEN, ADMIN):
        assert secret not in caplog.text
    assert ADMIN not in repr(dp.api.admin_token) and ADMIN not in str(dp.api.__dict__)
