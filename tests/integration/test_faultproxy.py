"""The fault proxy itself (tests.support.faultproxy), in front of real nginx: each kind of fault as
a client sees it on the wire, file offsets mapped into small ranges and multipart answers, parallel
clients sharing one schedule, a proxy inside a network namespace, and seeded schedules that replay."""

from __future__ import annotations

import email.parser
import hashlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.faultproxy import KINDS, RECOVERABLE, Fault, FaultProxy, FaultSchedule
from tests.support.netns import Netns
from tests.support.nginx import Nginx

pytestmark = pytest.mark.root

BLOB = hashlib.shake_256(b"peagent").digest(1 << 20)  # 1 MiB, every byte position distinct enough
OTHER = hashlib.shake_256(b"another").digest(1 << 20)


@pytest.fixture(scope="module")
def nginx() -> Iterator[Nginx]:
    if os.geteuid() != 0:
        pytest.skip("needs root: nginx's workers drop privileges to nobody")
    with Nginx() as server:
        for name, data, mtime in (("blob", BLOB, 1_700_000_000), ("other", OTHER, 1_700_000_100)):
            path = server.root / name
            path.write_bytes(data)
            path.chmod(0o644)
            os.utime(path, (mtime, mtime))
        yield server


def get(proxy: FaultProxy, path: str = "/blob", method: str = "GET", **headers: str) -> tuple[http.client.HTTPResponse,
                                                                                             bytes]:
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
    response = conn.getresponse()
    try:
        body = response.read()
    except http.client.IncompleteRead as exc:
        body = exc.partial
    conn.close()
    return response, body


def test_faults_as_a_client_sees_them(nginx: Nginx) -> None:
    schedule = [
        Fault("status", request=0, status=503, retry_after="7"),
        Fault("truncate", request=1, offset=1000, origin="body"),
        Fault("bad-range", request=2, shift=-4),
        Fault("ignore-range", request=3),
        Fault("swap", request=4, to="/other", same_etag=True),  # request 4 is a HEAD: strikes 5
        Fault("stall", request=6, offset=10, origin="body", seconds=0.3),
        Fault("slow", request=7, rate=2 << 20),
        Fault("drop", request=8, offset=70_000, origin="body"),
    ]
    with FaultProxy(nginx.url, schedule) as proxy:
        response, _ = get(proxy)
        assert (response.status, response.getheader("Retry-After")) == (503, "7")

        response, body = get(proxy)
        assert response.status == 200 and response.getheader("Content-Length") == str(len(BLOB))
        assert body == BLOB[:1000]

        response, body = get(proxy, Range="bytes=100-199")
        assert (response.status, response.getheader("Content-Range")) == (206, f"bytes 96-195/{len(BLOB)}")
        assert body == BLOB[100:200]  # the label lies, not the data

        response, body = get(proxy, Range="bytes=100-199")
        assert (response.status, body) == (200, BLOB)

        get(proxy, method="HEAD")  # faults strike GETs only (unless told otherwise)
        response, body = get(proxy)
        assert body == OTHER and response.getheader("ETag") == original_etag(nginx, "/blob")

        started = time.monotonic()
        response, body = get(proxy)
        assert body == BLOB and time.monotonic() - started >= 0.3

        started = time.monotonic()
        _, body = get(proxy)
        assert body == BLOB and time.monotonic() - started >= 0.4  # 1 MiB at 2 MiB/s

        with pytest.raises(ConnectionResetError):
            get(proxy)
        proxy.wait_idle()
        assert [e.outcome for e in proxy.exchanges] == ["complete", "truncated", "complete", "complete",
                                                        "complete", "complete", "complete", "complete", "reset"]
        assert proxy.exchanges[8].sent == 70_000
        assert sorted(f.index for f in proxy.fired) == list(range(len(schedule)))
        assert not proxy.errors


def original_etag(nginx: Nginx, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=5)
    conn.request("HEAD", path)
    etag = conn.getresponse().getheader("ETag")
    conn.close()
    return etag


def test_a_swap_with_its_own_etag_meets_if_match(nginx: Nginx) -> None:
    with FaultProxy(nginx.url, [Fault("swap", to="/other", times=None)]) as proxy:
        response, _ = get(proxy, Range="bytes=10-", If_Match=original_etag(nginx, "/blob"))
        assert response.status == 412
        assert proxy.exchanges[0].upstream_path == "/other"
        last = nginx.access()[-1]
        assert (last["path"], last["range"], last["if_match"]) == ("/other", "bytes=10-", original_etag(nginx, "/blob"))


def test_file_offsets_inside_multipart_answers(nginx: Nginx) -> None:
    faults = [Fault("flip", offset=1050, mask=0xFF), Fault("flip", offset=5000, mask=0x01)]
    with FaultProxy(nginx.url, faults) as proxy:
        response, body = get(proxy, Range="bytes=0-99,1000-1099,5000-5099")
        assert response.status == 206
        message = email.parser.BytesParser().parsebytes(
            f"Content-Type: {response.getheader('Content-Type')}\r\n\r\n".encode() + body)
        parts = [part.get_payload(decode=True) for part in message.get_payload()]
        expected = [bytearray(BLOB[a:a + 100]) for a in (0, 1000, 5000)]
        expected[1][50] ^= 0xFF
        expected[2][0] ^= 0x01
        assert parts == [bytes(e) for e in expected]
        assert [(f.file_offset, f.body_offset is not None) for f in proxy.fired] == [(1050, True), (5000, True)]


def test_parallel_clients_and_many_small_ranges(nginx: Nginx) -> None:
    """A frame engine's pattern: several connections, each fetching 16 KiB ranges, refetching any
    that failed; faults at file offsets strike whichever range carries them, once."""
    step = 16 << 10
    schedule = FaultSchedule.random(3, len(BLOB), 12, ("drop", "truncate", "stall", "status", "flip"),
                                    stall_seconds=(None,))
    ranges = list(range(0, len(BLOB), step))
    got: dict[int, bytes] = {}
    lock = threading.Lock()
    with FaultProxy(nginx.url, schedule) as proxy:
        def worker(mine: list[int]) -> None:
            conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=0.5)
            for start in mine:
                for _ in range(5):
                    try:
                        conn.request("GET", "/blob", headers={"Range": f"bytes={start}-{start + step - 1}"})
                        response = conn.getresponse()
                        data = response.read()
                        if response.status == 206 and data == BLOB[start:start + step]:
                            with lock:
                                got[start] = data
                            break
                    except (OSError, http.client.HTTPException):
                        pass
                    conn.close()  # after any failure (a corrupt range too): a fresh connection
            conn.close()

        threads = [threading.Thread(target=worker, args=(ranges[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        proxy.wait_idle()
        assert sorted(got) == ranges, proxy.report()
        fired = [f.index for f in proxy.fired]
        assert sorted(fired) == sorted(set(fired)), "a fault meant to strike once struck twice"
        positional = [i for i, f in enumerate(schedule) if f.positional]
        assert set(positional) <= set(fired), proxy.report()
        assert len({e.connection for e in proxy.exchanges}) >= 4
        assert not proxy.errors


def test_in_a_network_namespace(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    with Netns("fp") as ns, Nginx(ns=ns, port=8080) as server:
        (server.root / "blob").write_bytes(BLOB)
        (server.root / "blob").chmod(0o644)
        with FaultProxy(server.url, [Fault("drop", offset=5000)], ns=ns) as proxy:
            def fetch() -> bytes:
                sock = socket.create_connection((proxy.host, proxy.port), 5)
                sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                try:
                    while chunk := sock.recv(65536):
                        data += chunk
                except ConnectionResetError:
                    pass
                sock.close()
                return data

            raw = ns.call(fetch)
            assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(BLOB[:5000])
            with pytest.raises(OSError):
                socket.create_connection((proxy.host, proxy.port), 1).close()  # not reachable from outside


def test_random_schedules_replay() -> None:
    a = FaultSchedule.random(42, 10 << 20, 8, KINDS, other="/other")
    assert str(a) == str(FaultSchedule.random(42, 10 << 20, 8, KINDS, other="/other"))
    assert str(a) != str(FaultSchedule.random(43, 10 << 20, 8, KINDS, other="/other"))
    assert "seed 42" in str(a)
    recoverable = FaultSchedule.random(42, 10 << 20, 50)
    assert recoverable.recoverable and {f.kind for f in recoverable} <= set(RECOVERABLE)
    assert all(0 <= f.offset < 10 << 20 for f in recoverable if f.offset is not None)
    with pytest.raises(ValueError, match="needs an offset"):
        Fault("drop")
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode", offset=1)
