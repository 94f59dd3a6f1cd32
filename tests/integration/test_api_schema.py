"""``peagent serve`` against its own OpenAPI description, with schemathesis (4.x).

A live server (in a thread, on 127.0.0.1) holding some real data: machines in every state,
deployments running, done, complete, failed and cancelled, events from the server, the PE and a
first boot. Then:

* every operation is called with real ids, keys and tokens, and each answer is checked (no server
  error, a documented status code and content type, a body the schema describes);
* the schemathesis CLI generates a few thousand requests, valid and not, from the description
  (its coverage, fuzzing and stateful phases) with the same four checks, which must all pass;
* and, so that a pass means something, the same run fails against a server that answers 500, and
  the conformance check fails on a response with a field the description lacks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis import checks
from schemathesis.core.failures import FailureGroup

from peagent.server.dp import DPServer
from tests.support.dp import embedded_dp

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-0123456789abcdef"
STATIC_TOKEN = "static-token-0123456789"
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]
CHECK_NAMES = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DPServer, dict[str, Any]]]:
    work = tmp_path_factory.mktemp("api-schema")
    root = work / "dp"
    (root / "tasks").mkdir(parents=True)
    shutil.copy(ROOT / "netboot" / "ipxe" / "boot.ipxe", root / "boot.ipxe")
    for name in ("default", "lab", "dell"):
        (root / "tasks" / f"{name}.json").write_text(json.dumps({"version": 1, "id": name}))
    (root / "tasks" / "static.json").write_text(json.dumps({"version": 1, "id": "static-1",
                                                            "status": {"token": STATIC_TOKEN}}))
    config = work / "serve.json"
    config.write_text(json.dumps({
        "groups": {"lab": ["52:54:00:00:00:01", "52:54:00:00:00:02"]},
        "rules": [{"name": "lab", "match": {"group": "lab"}, "task": "tasks/lab.json", "once": True},
                  {"name": "dell", "match": {"vendor": "Dell*"}, "task": "tasks/dell.json", "approve": True}]}))
    with embedded_dp(root, db=work / "status.sqlite", config=config, admin_token=ADMIN) as server:
        yield server, seed(server)


def seed(server: DPServer) -> dict[str, Any]:
    """Machines and deployments in every state; what the tests call with."""
    base = server.url.rstrip("/")

    def task(**identity: str) -> dict[str, Any]:
        r = requests.get(f"{base}/api/v1/task", params=identity, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def send(t: dict[str, Any], *events: dict[str, Any]) -> None:
        batch = [{"schema": 1, "id": f"event-{t['id']}-{e['seq']}", "deployment_id": t["id"], "source": "pe",
                  "time": time.time(), "message": e["phase"], **e} for e in events]
        r = requests.post(f"{base}/api/v1/events", json={"events": batch},
                          headers={"Authorization": f"Bearer {t['status']['token']}"}, timeout=5)
        assert r.status_code == 200, r.text

    machine = {"macs": ["52:54:00:00:00:01"], "model": "ThinkPad T14", "vendor": "LENOVO", "hostname": "ws1"}
    done = task(mac="52:54:00:00:00:01", model="ThinkPad T14")
    send(done, {"seq": 1, "phase": "boot", "machine": machine},
         {"seq": 2, "phase": "write", "done": 10, "total": 20, "rate": 5.5, "eta": 2.0, "dp": base,
          "warnings": ["slow"], "step": "image", "data": {"k": [1, 2]}},
         {"seq": 3, "phase": "done"})
    requests.post(f"{base}/status", json={"phase": "complete", "message": "first boot complete",
                                          "deployment_id": done["id"], "machine": {"macs": ["52:54:00:00:00:01"]},
                                          "time": time.time()},
                  headers={"Authorization": f"Bearer {done['status']['token']}"}, timeout=5)
    failed = task(mac="aa:bb:cc:00:00:01", uuid="4c4c4544-0042-3510-8052-b2c04f4d3732", serial="SN1", model="X1")
    send(failed, {"seq": 1, "phase": "fetch", "level": "error", "retries": 3, "dp": base,
                  "error": {"code": "fetch.failed", "message": "HTTP 404"}})
    running = task(mac="52:54:00:00:00:02")
    send(running, {"seq": 1, "phase": "write", "done": 1, "total": 100})
    headers = {"Authorization": f"Bearer {ADMIN}"}
    assert requests.get(f"{base}/api/v1/task", params={"mac": "aa:bb:cc:00:00:02", "vendor": "Dell Inc."},
                        timeout=5).status_code == 409
    cancelled = task(mac="aa:bb:cc:00:00:03")
    requests.post(f"{base}/api/v1/machines/aa:bb:cc:00:00:03/cancel", headers=headers, timeout=5)
    task(mac="aa:bb:cc:00:00:04")
    requests.post(f"{base}/api/v1/machines/aa:bb:cc:00:00:04/postpone", json={"seconds": 3600}, headers=headers,
                  timeout=5)
    r = requests.post(f"{base}/api/v1/events", headers={"Authorization": f"Bearer {STATIC_TOKEN}"}, timeout=5,
                      json={"schema": 1, "id": "event-static-1", "deployment_id": "static-1", "seq": 1,
                            "source": "pe", "time": time.time(), "phase": "boot", "message": "static",
                            "machine": {"macs": ["aa:bb:cc:00:00:05"]}})
    assert r.status_code == 200
    return {"done": done, "failed": failed, "running": running, "cancelled": cancelled,
            "keys": ["52:54:00:00:00:01", "4c4c4544-0042-3510-8052-b2c04f4d3732", "aa:bb:cc:00:00:02",
                     "aa:bb:cc:00:00:03", "aa:bb:cc:00:00:04", "aa:bb:cc:00:00:05"]}


def validated(schema: schemathesis.BaseSchema, path: str, method: str, **case: Any) -> int:
    operation = schema[path][method]
    c = operation.Case(**case)
    response = c.call()
    c.validate_response(response, checks=CHECKS)
    return response.status_code


def test_every_operation_with_real_data_conforms(live: tuple[DPServer, dict[str, Any]]) -> None:
    server, data = live
    schema = schemathesis.openapi.from_url(f"{server.url}api/v1/openapi.json")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    statuses = []
    for path in ("/api/v1/machines", "/api/v1/errors", "/api/v1/deployments", "/api/v1/openapi.json"):
        statuses.append(validated(schema, path, "GET"))
    for status in ("running", "done", "complete", "failed", "cancelled"):
        statuses.append(validated(schema, "/api/v1/deployments", "GET", query={"status": status, "limit": 2}))
    for key in data["keys"]:
        statuses.append(validated(schema, "/api/v1/machines/{key}", "GET", path_parameters={"key": key}))
    for name in ("done", "failed", "running", "cancelled"):
        dep = data[name]["id"]
        statuses.append(validated(schema, "/api/v1/deployments/{id}", "GET", path_parameters={"id": dep}))
        statuses.append(validated(schema, "/api/v1/deployments/{id}/events", "GET", path_parameters={"id": dep}))
    statuses.append(validated(schema, "/api/v1/tasks/{id}", "GET", path_parameters={"id": data["running"]["id"]}))
    statuses.append(validated(schema, "/api/v1/tasks/{id}", "GET", path_parameters={"id": data["done"]["id"]}))
    for identity in ({"mac": ["52:54:00:00:00:02"]}, {"mac": ["52:54:00:00:00:01"]},
                     {"mac": ["aa:bb:cc:00:00:02"], "vendor": "Dell Inc."}, {"mac": ["aa:bb:cc:00:00:03"]},
                     {"mac": ["aa:bb:cc:00:00:04"]}):
        statuses.append(validated(schema, "/api/v1/task", "GET", query=identity))
        statuses.append(validated(schema, "/boot.ipxe", "GET", query=identity))
    token = data["running"]["status"]["token"]
    event = {"schema": 1, "id": "event-conform-1", "deployment_id": data["running"]["id"], "seq": 9,
             "source": "pe", "time": 1.0, "phase": "write", "message": "m"}
    statuses.append(validated(schema, "/api/v1/events", "POST", body=event,
                              headers={"Authorization": f"Bearer {token}"}))
    statuses.append(validated(schema, "/api/v1/events", "POST", body={"events": [event]},
                              headers={"Authorization": f"Bearer {token}"}))
    statuses.append(validated(schema, "/api/v1/events", "POST", body={**event, "seq": -1},
                              headers={"Authorization": f"Bearer {token}"}))
    key = {"key": "aa:bb:cc:00:00:02"}
    statuses.append(validated(schema, "/api/v1/machines/{key}/postpone", "POST", path_parameters=key,
                              body={"until": time.time() + 60}, headers=admin))
    statuses.append(validated(schema, "/api/v1/machines/{key}/approve", "POST", path_parameters=key, headers=admin))
    statuses.append(validated(schema, "/api/v1/machines/{key}/cancel", "POST", path_parameters=key, headers=admin))
    # Every kind of answer was seen, not just the easy ones.
    assert {200, 400, 403, 404, 409} <= set(statuses)


def run_schemathesis(server: DPServer, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The CLI (in ``cwd``: it keeps a cache there) with the four checks and the admin token."""
    return subprocess.run(
        [str(SCHEMATHESIS), "run", f"{server.url}api/v1/openapi.json", "--checks", CHECK_NAMES,
         "--max-examples", "60", "--phases", "coverage,fuzzing,stateful", "--workers", "1",
         "-H", f"Authorization: Bearer {ADMIN}", *extra],
        capture_output=True, text=True, timeout=300, cwd=cwd, env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1",
                                                          "SCHEMATHESIS_TELEMETRY": "false"})


def test_schemathesis_finds_nothing(live: tuple[DPServer, dict[str, Any]], tmp_path: Path) -> None:
    server, _data = live
    result = run_schemathesis(server, tmp_path)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert " passed" in result.stdout
    # The server is still there, and still has its data.
    assert len(requests.get(f"{server.url}api/v1/machines", timeout=5).json()["machines"]) >= 6


def test_a_server_error_fails_the_run(live: tuple[DPServer, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    server, _data = live

    def broken() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.store, "errors", broken)
    assert requests.get(f"{server.url}api/v1/errors", timeout=5).status_code == 500
    result = run_schemathesis(server, tmp_path, "--include-path", "/api/v1/errors")
    assert result.returncode != 0
    assert "Server error" in result.stdout


def test_an_undescribed_field_fails_the_conformance_check(live: tuple[DPServer, dict[str, Any]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    server, _data = live
    real = server.store.errors
    monkeypatch.setattr(server.store, "errors", lambda: {**real(), "extra": 1})
    schema = schemathesis.openapi.from_url(f"{server.url}api/v1/openapi.json")
    with pytest.raises(FailureGroup, match="'extra' was unexpected"):
        validated(schema, "/api/v1/errors", "GET")
