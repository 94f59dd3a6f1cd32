"""The DP's nginx server block, served for real in a namespace and asked what a PE (and a cache
between it and the DP) would see: byte ranges, ETag and If-Match, cache headers by path, no
directory listings; and, in front of a real ``peagent serve`` on 127.0.0.1:8080 in the same
namespace (the block's upstream, as in production), the status API, the per-machine boot script
and the dashboard proxied, a batch of events delivered through nginx and read back, and what a
machine meets while peagent serve is down."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from peagent.deploy import load_task
from peagent.inventory.model import Dmi, Inventory, Nic
from peagent.state.model import Secret
from peagent.status.event import Event
from peagent.status.journal import Journal
from peagent.status.sender import Sender
from tests.netboot.conftest import failed
from tests.netboot.pxesite import PXE_IP, PxeSite
from tests.support.dp import DPProcess
from tests.support.netns import Netns
from tests.support.nginx import Nginx

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
BLOB = bytes(range(256)) * 4096  # 1 MiB with a recognisable pattern
CLIENT_IP = "10.77.0.50"
UPSTREAM = ("127.0.0.1", 8080)  # where the shipped block expects peagent serve
MAC = "52:54:00:12:34:56"
MAX_BATCH_BODY = 4 << 20  # peagent serve's limit on a POST of events (docs/status.md)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PxeSite]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if shutil.which("nginx") is None:
        pytest.fail("nginx is missing: run scripts/install-deps")
    dp = tmp_path_factory.mktemp("dp")
    (dp / "pe").mkdir()
    (dp / "pe" / "vmlinuz").write_bytes(BLOB)
    (dp / "tasks").mkdir()
    (dp / "tasks" / "default.json").write_text('{"image": {"url": "images/ws.img.zst"}}\n')
    (dp / "images").mkdir()
    (dp / "images" / "ws.img.zst").write_bytes(BLOB)
    (dp / "images" / "ws.manifest.json").write_text("{}\n")
    version = dp / "images" / "ws" / "1"  # as `peagent image build -o` lays out an image
    version.mkdir(parents=True)
    for name in ("image.blob", "frames.bin", "manifest.json", "manifest.json.sig"):
        (version / name).write_bytes(BLOB[:4096])
    (version / ".image.blob.upload-k3j4h5").write_bytes(BLOB[:100])  # an upload being received
    (version / ".draft.manifest.json").write_bytes(BLOB[:100])
    (dp / "tasks" / ".default.json.upload-y7").write_bytes(BLOB[:100])
    (dp / "boot.ipxe").write_text("#!ipxe\n")
    (dp / "peagent-serve.json").write_text('{"unknown": "default", "default_task": "tasks/default.json"}\n')
    with PxeSite(tmp_path_factory.mktemp("site"), dp_root=dp) as pxe_site:
        yield pxe_site


@pytest.fixture
def client(site: PxeSite, request: pytest.FixtureRequest) -> Iterator[Netns]:
    """A machine on the LAN, at CLIENT_IP."""
    with site.client() as ns:
        ns.run(["ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0"])
        yield ns
    if failed(request):
        print(site.logs())


@pytest.fixture
def ask(client: Netns) -> Callable:
    """ask(method, path, body=None, **headers) -> (response, body), asked from the machine."""

    def ask(method: str, path: str, body: bytes | None = None,
            **headers: str) -> tuple[http.client.HTTPResponse, bytes]:
        conn = http.client.HTTPConnection(PXE_IP, 80, timeout=10)
        conn.sock = client.call(socket.create_connection, (PXE_IP, 80), 10)
        with conn.sock:
            conn.request(method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
            response = conn.getresponse()
            return response, response.read()

    return ask


@pytest.fixture
def get(ask: Callable) -> Callable:
    """get(path, **headers) -> (response, body)."""
    return lambda path, **headers: ask("GET", path, **headers)


@pytest.fixture
def serve(site: PxeSite, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DPProcess]:
    """peagent serve on the DP directory nginx serves, at the block's upstream, in the PXE namespace
    (stopped, and its log shown on failure, at the end)."""
    with DPProcess(site.public / "dp", site.pxe_ns.prefix(), port=UPSTREAM[1], db=tmp_path / "status.sqlite") as server:
        yield server
    if failed(request):
        print("----- peagent serve log -----\n" + "".join(server.output))


@contextlib.contextmanager
def recording_upstream(site: PxeSite) -> Iterator[list[dict[str, Any]]]:
    """A stand-in for peagent serve at the upstream address that records each request it gets
    (method, path, headers in lower case, body) and answers JSON that says it may be cached."""
    seen: list[dict[str, Any]] = []

    class Recorder(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen.append({"method": self.command, "path": self.path, "body": self.rfile.read(length),
                         "headers": {k.lower(): v for k, v in self.headers.items()}})
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = site.pxe_ns.call(HTTPServer, UPSTREAM, Recorder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


def event(deployment_id: str, seq: int, phase: str = "fetch", **fields: Any) -> dict[str, Any]:
    """A schema 1 event from the PE, as the agent journals it."""
    return Event(id=uuid.uuid4().hex, deployment_id=deployment_id, seq=seq, source="pe", time=time.time(),
                 phase=phase, message=f"{phase} {seq}", machine={"macs": [MAC]}, **fields).to_json()


def test_files_are_served_whole(get) -> None:
    response, body = get("/pe/vmlinuz")
    assert response.status == 200
    assert body == BLOB
    assert response.getheader("Accept-Ranges") == "bytes"


def test_ranges_and_if_match_for_resumed_downloads(get) -> None:
    response, body = get("/images/ws.img.zst", Range="bytes=1000-1999")
    assert response.status == 206
    assert response.getheader("Content-Range") == f"bytes 1000-1999/{len(BLOB)}"
    assert body == BLOB[1000:2000]
    etag = response.getheader("ETag")
    assert etag and not etag.startswith("W/"), "a strong ETag, so If-Match can be used"

    response, body = get("/images/ws.img.zst", Range="bytes=-10", If_Match=etag)
    assert (response.status, body) == (206, BLOB[-10:])
    response, _ = get("/images/ws.img.zst", Range="bytes=0-9", If_Match='"another-version"')
    assert response.status == 412, "a changed file must not be resumed into"


def test_an_unsatisfiable_range_is_416(get) -> None:
    response, body = get("/images/ws.img.zst", Range=f"bytes={len(BLOB)}-")
    assert response.status == 416
    assert response.getheader("Content-Range") == f"bytes */{len(BLOB)}"
    assert BLOB[:64] not in body


def test_a_range_past_the_end_is_cut_at_the_end(get) -> None:
    response, body = get("/images/ws.img.zst", Range=f"bytes={len(BLOB) - 10}-{len(BLOB) + 1000}")
    assert response.status == 206
    assert response.getheader("Content-Range") == f"bytes {len(BLOB) - 10}-{len(BLOB) - 1}/{len(BLOB)}"
    assert body == BLOB[-10:]


def test_several_ranges_come_as_multipart(get) -> None:
    response, body = get("/images/ws.img.zst", Range="bytes=10-19,5000-5009")
    assert response.status == 206
    content_type = response.getheader("Content-Type", "")
    assert content_type.startswith("multipart/byteranges; boundary=")
    boundary = content_type.split("boundary=", 1)[1].encode()
    parts = [p for p in body.split(b"--" + boundary) if p.strip(b"\r\n-")]
    pieces = {p.split(b"Content-Range: ", 1)[1].split(b"\r\n", 1)[0]: p.split(b"\r\n\r\n", 1)[1][:-2]
              for p in parts}
    assert pieces == {f"bytes 10-19/{len(BLOB)}".encode(): BLOB[10:20],
                      f"bytes 5000-5009/{len(BLOB)}".encode(): BLOB[5000:5010]}


def test_no_cache_files_revalidate_with_their_etag(get) -> None:
    response, _ = get("/images/ws/1/manifest.json")
    etag = response.getheader("ETag")
    response, body = get("/images/ws/1/manifest.json", If_None_Match=etag)
    assert (response.status, body) == (304, b"")
    assert response.getheader("Cache-Control") == "no-cache"
    response, body = get("/images/ws/1/manifest.json", If_None_Match='"another-version"')
    assert (response.status, body) == (200, BLOB[:4096])


@pytest.mark.parametrize(("path", "cache_control"), [
    ("/boot.ipxe", "no-store"),
    ("/tasks/default.json", "no-store"),
    ("/pe/vmlinuz", "no-cache"),
    ("/images/ws.manifest.json", "no-cache"),
    ("/images/ws.img.zst", "public, max-age=31536000, immutable"),
    ("/images/ws/1/image.blob", "public, max-age=31536000, immutable"),
    ("/images/ws/1/frames.bin", "public, max-age=31536000, immutable"),
    ("/images/ws/1/manifest.json", "no-cache"),
    ("/images/ws/1/manifest.json.sig", "no-cache"),
])
def test_cache_headers_by_path(get, path: str, cache_control: str) -> None:
    response, _ = get(path)
    assert response.status == 200
    assert response.getheader("Cache-Control") == cache_control


@pytest.mark.parametrize("path", ["/pe/", "/tasks/", "/images/"])
def test_no_directory_listings(get, path: str) -> None:
    response, body = get(path)
    assert response.status in (403, 404)
    assert b"default.json" not in body and b"ws.img.zst" not in body


def test_the_server_block_passes_nginx_t(site: PxeSite) -> None:
    conf = site.public / "nginx.conf"
    result = site.pxe_ns.run(["nginx", "-t", "-c", str(conf)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_missing_files_are_404(get) -> None:
    response, _ = get("/pe/nothing-here")
    assert response.status == 404


def test_paths_outside_the_dp_are_refused(get, site: PxeSite) -> None:
    response, body = get("/../nginx.conf")
    assert response.status in (400, 403, 404)
    assert b"worker_processes" not in body
    assert Path(site.public / "nginx.conf").exists()


@pytest.mark.parametrize("path", ["/peagent-serve.json", "/images/ws/1/.image.blob.upload-k3j4h5",
                                  "/images/ws/1/.draft.manifest.json", "/tasks/.default.json.upload-y7"])
def test_the_servers_own_files_are_not_served(get, path: str) -> None:
    response, body = get(path)
    assert response.status == 404
    assert b"default_task" not in body and BLOB[:100] not in body


# --- in front of peagent serve ---------------------------------------------------------------


def hand_out_task(get: Callable, mac: str = MAC) -> dict[str, Any]:
    """GET /api/v1/task through nginx, as the PE asks for its task: the task, with id and status."""
    response, body = get(f"/api/v1/task?mac={mac}")
    assert response.status == 200, body
    return json.loads(body)


def post_events(ask: Callable, task: dict[str, Any], events: list[dict[str, Any]],
                path: str = "/api/v1/events") -> tuple[http.client.HTTPResponse, bytes]:
    body = json.dumps({"events": events}).encode()
    return ask("POST", path, body, Authorization=f"Bearer {task['status']['token']}",
               Content_Type="application/json")


def timeline(get: Callable, deployment_id: str) -> list[dict[str, Any]]:
    response, body = get(f"/api/v1/deployments/{deployment_id}/events")
    assert response.status == 200, body
    return json.loads(body)["events"]


def test_events_posted_through_nginx_are_stored_once(serve: DPProcess, get, ask) -> None:
    task = hand_out_task(get)
    # The status URL leads back to nginx (port 80, so none written), not to peagent serve's own address.
    assert task["status"]["url"] == f"http://{PXE_IP}/api/v1/events"
    deployment_id = task["id"]
    sent = [event(deployment_id, 1, "boot"), event(deployment_id, 2, "fetch", done=10, total=100)]

    response, body = post_events(ask, task, sent)
    assert (response.status, json.loads(body)) == (200, {"accepted": 2, "duplicates": 0})
    response, body = post_events(ask, task, sent)  # a replay, as after a lost answer
    assert (response.status, json.loads(body)) == (200, {"accepted": 0, "duplicates": 2})
    response, body = post_events(ask, task, [event(deployment_id, 3, "write")], path="/status")
    assert (response.status, json.loads(body)) == (200, {"accepted": 1, "duplicates": 0})

    stored = [e for e in timeline(get, deployment_id) if e["source"] == "pe"]
    assert [e["id"] for e in stored] == [*(e["id"] for e in sent), stored[-1]["id"]]
    assert [(e["seq"], e["phase"], e["done"]) for e in stored] == [
        (1, "boot", None), (2, "fetch", 10), (3, "write", None)]


def test_a_wrong_token_is_refused_through_nginx(serve: DPProcess, get, ask) -> None:
    task = hand_out_task(get)
    forged = {**task, "status": {**task["status"], "token": "not-" + task["status"]["token"]}}
    response, body = post_events(ask, forged, [event(task["id"], 1, "boot")])
    assert response.status == 401
    assert response.getheader("WWW-Authenticate", "").startswith("Bearer")
    assert task["id"] in json.loads(body)["error"]
    assert forged["status"]["token"] not in body.decode()
    assert [e for e in timeline(get, task["id"]) if e["source"] == "pe"] == []


def test_a_batch_up_to_the_servers_limit_passes_and_a_bigger_one_is_refused_by_nginx(
        serve: DPProcess, site: PxeSite, get, ask) -> None:
    task = hand_out_task(get)
    # 100 events of ~40 KB: a body just under 4 MiB, which nginx must hand over whole.
    big = [event(task["id"], seq, data={"log": "x" * 40_000}) for seq in range(1, 101)]
    body = json.dumps({"events": big}).encode()
    assert MAX_BATCH_BODY - 200_000 < len(body) <= MAX_BATCH_BODY
    response, answer = post_events(ask, task, big)
    assert (response.status, json.loads(answer)) == (200, {"accepted": 100, "duplicates": 0})

    response, answer = ask("POST", "/api/v1/events", b" " * (MAX_BATCH_BODY + 1),
                           Authorization=f"Bearer {task['status']['token']}", Content_Type="application/json")
    assert response.status == 413
    assert json.loads(answer)["field"] == "body"
    assert "client intended to send too large body" in site.nginx.text()  # nginx's refusal, not peagent serve's


def test_the_per_machine_boot_script_comes_from_peagent_serve(serve: DPProcess, get) -> None:
    response, body = get(f"/boot.ipxe?mac={MAC}")
    assert response.status == 200
    assert response.getheader("Cache-Control") == "no-store"
    script = body.decode()
    assert script.startswith("#!ipxe") and script != "#!ipxe\n"
    assert f"http://{PXE_IP}/api/v1/tasks/" in script  # its URLs lead back through nginx

    response, body = get("/boot.ipxe")  # the plain script: nginx's own file
    assert (response.status, body) == (200, b"#!ipxe\n")
    assert response.getheader("ETag")


def test_the_dashboard_is_proxied_with_its_own_headers(serve: DPProcess, get) -> None:
    response, body = get("/")
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/html")
    assert b"<html" in body.lower()
    assert response.getheader("Cache-Control") == "no-cache"  # peagent serve's, passed through
    assert "default-src 'none'" in response.getheader("Content-Security-Policy", "")
    response, body = get("/ui/index.html")
    assert response.status == 200 and b"<html" in body.lower()


@pytest.mark.parametrize("path", ["/api/v1/openapi.json", "/api/v1/machines"])
def test_api_answers_are_never_cached(serve: DPProcess, get, path: str) -> None:
    response, body = get(path)
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Cache-Control") == "no-store"
    json.loads(body)


def test_the_proxy_tells_peagent_serve_who_asked_and_how(site: PxeSite, ask) -> None:
    with recording_upstream(site) as seen:
        # A client that claims another address, and a name for the DP: the name is kept, the claim is not.
        response, body = ask("POST", "/api/v1/events", b'{"events": []}', Host="dp.example",
                             X_Forwarded_For="192.0.2.66", Content_Type="application/json")
        assert (response.status, body) == (200, b'{"ok": true}')
        assert response.getheader("Cache-Control") == "no-store"  # the upstream's max-age is dropped
        response, _ = ask("GET", "/ui/style.css", Host="dp.example:80")
        assert response.getheader("Cache-Control") == "public, max-age=600"  # the dashboard's own, as sent
    first, second = seen
    assert (first["method"], first["path"], first["body"]) == ("POST", "/api/v1/events", b'{"events": []}')
    assert first["headers"]["host"] == "dp.example"
    assert first["headers"]["x-forwarded-for"] == CLIENT_IP
    assert first["headers"]["x-forwarded-proto"] == "http"
    assert (second["path"], second["headers"]["host"]) == ("/ui/style.css", "dp.example")


def test_with_peagent_serve_down_nginx_answers_502_and_the_agent_keeps_its_events(
        serve: DPProcess, client: Netns, get, ask) -> None:
    task = hand_out_task(get)
    serve.stop()

    response, body = post_events(ask, task, [event(task["id"], 1, "boot")])
    assert response.status == 502
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Retry-After")
    assert "peagent serve" in json.loads(body)["error"]
    for path in ("/api/v1/machines", f"/api/v1/task?mac={MAC}", "/"):
        assert get(path)[0].status == 502, path
    # What needs no decision is still served: a machine can boot and fetch. The per-machine boot
    # script falls back to the static one (the PE then meets the 502 above when it asks for its task,
    # and stops there: a 5xx is never a reason to take the static task files).
    for path in ("/boot.ipxe", f"/boot.ipxe?mac={MAC}"):
        response, body = get(path)
        assert (response.status, body) == (200, b"#!ipxe\n"), path
        assert response.getheader("Cache-Control") == "no-store", path
    response, body = get("/pe/vmlinuz")
    assert (response.status, body) == (200, BLOB)

    # The agent's sender meets that 502: the events wait in its journal, and go once the server is back.
    journal = Journal(None, task["id"])
    sender = Sender(task["status"]["url"], Secret(task["status"]["token"]), journal, backoff_first=0.01)
    for seq in (1, 2, 3):
        journal.append(event(task["id"], seq, "partition"))
    assert client.call(sender.send_pending) is False
    assert (journal.sent(), sender.refused) == (0, None)
    serve.start()
    assert client.call(lambda: sender.send_pending(force=True)) is True
    assert journal.sent() == 3
    stored = [e["id"] for e in timeline(get, task["id"]) if e["source"] == "pe"]
    assert stored == [e["id"] for e in journal.events()]


def test_nginx_alone_is_a_whole_dp_the_agent_takes_the_static_tasks() -> None:
    """``$peagent_serve`` off: the proxied paths are 404 (not 502), so the agent, asking its DP's rules
    first as always, falls back to the task files by MAC; the per-machine boot script is the static one."""
    with Nginx(serve=False) as dp:
        (dp.root / "tasks").mkdir()
        image = {"url": "images/a.img.zst", "sha256": "0" * 64}
        (dp.root / "tasks" / "default.json").write_text(json.dumps({"version": 1, "id": "everyone", "image": image}))
        (dp.root / "tasks" / "52-54-00-12-34-56.json").write_text(json.dumps({"version": 1, "id": "this-one",
                                                                               "image": image}))
        (dp.root / "boot.ipxe").write_text("#!ipxe\n")
        for path in ("/api/v1/task?mac=52:54:00:12:34:56", "/status", "/api/v1/events", "/ui/app.js"):
            conn = http.client.HTTPConnection("127.0.0.1", dp.port, timeout=10)
            conn.request("POST" if path in ("/status", "/api/v1/events") else "GET", path, body=b"{}")
            assert conn.getresponse().status == 404, path
        conn = http.client.HTTPConnection("127.0.0.1", dp.port, timeout=10)
        conn.request("GET", f"/boot.ipxe?mac={MAC}")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"#!ipxe\n")
        inventory = Inventory(nics=(Nic(name="eth0", mac=MAC),), dmi=Dmi(product_uuid=str(uuid.uuid4())))
        task, source = load_task(None, (dp.url,), inventory)
    assert (task.deployment_id, source) == ("this-one", dp.url + "tasks/52-54-00-12-34-56.json")
