from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from peagent.errors import UsageError
from peagent.server.dp import DPServer, serve

TOKEN = "t0ken-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start(root: Path, **kwargs) -> DPServer:
    server = serve(root, "127.0.0.1", 0, **kwargs)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def dp(tmp_path: Path) -> Iterator[DPServer]:
    (tmp_path / "dp").mkdir()
    server = start(tmp_path / "dp", upload_token=TOKEN, max_upload=1 << 20)
    yield server
    server.shutdown()
    server.server_close()


def raw_put(server: DPServer, path: str, body: bytes, headers: dict[str, str]) -> http.client.HTTPResponse:
    """A request sent as written (requests would normalise '..' away)."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=5)
    conn.request("PUT", path, body=body, headers=headers)
    return conn.getresponse()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".*upload-*"))


def test_put_with_the_token_stores_the_file_and_get_serves_it(dp: DPServer) -> None:
    r = requests.put(dp.url + "images/os/1/a.bin", data=b"abc" * 1000, headers=AUTH, timeout=5)
    assert r.status_code == 201
    assert (dp.root / "images/os/1/a.bin").read_bytes() == b"abc" * 1000
    assert requests.get(dp.url + "images/os/1/a.bin", timeout=5).content == b"abc" * 1000
    r = requests.put(dp.url + "images/os/1/a.bin", data=b"new", headers=AUTH, timeout=5)
    assert r.status_code == 204 and (dp.root / "images/os/1/a.bin").read_bytes() == b"new"
    r = requests.put(dp.url + "images/os/1/a.bin", data=b"x", headers={**AUTH, "If-None-Match": "*"}, timeout=5)
    assert r.status_code == 412 and (dp.root / "images/os/1/a.bin").read_bytes() == b"new"
    assert leftovers(dp.root) == []


def test_a_chunked_body_is_stored_whole(dp: DPServer) -> None:
    pieces = [bytes([i]) * 70000 for i in range(5)]
    r = requests.put(dp.url + "blob", data=iter(pieces), headers=AUTH, timeout=5)
    assert r.status_code == 201 and (dp.root / "blob").read_bytes() == b"".join(pieces)


def test_no_token_or_a_wrong_one_is_401_and_nothing_is_written(dp: DPServer) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
        r = requests.put(dp.url + "x.bin", data=b"data", headers=headers, timeout=5)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert not (dp.root / "x.bin").exists()


def test_a_refused_token_closes_the_connection_and_says_so(dp: DPServer) -> None:
    """A client that reuses its connection (an uploader's preflight, then its next request) must know it is gone."""
    with requests.Session() as session:
        r = session.options(dp.url + "x/manifest.json", headers={"Authorization": "Bearer wrong-token-0123456789"},
                            timeout=5)
        assert (r.status_code, r.headers["Connection"]) == (401, "close")
        assert session.head(dp.url + "x/manifest.json", timeout=5).status_code == 404  # a new connection, not an error



@pytest.mark.parametrize("path", ["/../outside.bin", "/images/../../outside.bin", "/a/%2e%2e/%2e%2e/outside.bin",
                                  "/", "/images/"])
def test_paths_out_of_the_directory_or_naming_no_file_are_refused(dp: DPServer, path: str) -> None:
    r = raw_put(dp, path, b"data", {**AUTH, "Content-Length": "4"})
    assert r.status == 400
    assert not (dp.root.parent / "outside.bin").exists()


def test_a_symlink_out_of_the_directory_is_not_written_through(dp: DPServer, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (dp.root / "escape").symlink_to(tmp_path / "elsewhere")
    (dp.root / "link.bin").symlink_to(tmp_path / "target.bin")
    assert raw_put(dp, "/escape/x.bin", b"data", AUTH).status == 400
    assert raw_put(dp, "/link.bin", b"data", AUTH).status == 409
    assert list((tmp_path / "elsewhere").iterdir()) == [] and not (tmp_path / "target.bin").exists()


def test_the_size_limit_is_enforced_for_both_kinds_of_body(dp: DPServer) -> None:
    r = requests.put(dp.url + "big", data=bytes((1 << 20) + 1), headers=AUTH, timeout=5)
    assert r.status_code == 413
    try:
        r = requests.put(dp.url + "big", data=iter([bytes(1 << 19)] * 3), headers=AUTH, timeout=5)
        assert r.status_code == 413
    except requests.ConnectionError:
        pass  # the DP may close before the client has sent it all: refused either way
    assert not (dp.root / "big").exists() and leftovers(dp.root) == []


def test_a_body_cut_short_leaves_nothing(dp: DPServer) -> None:
    conn = http.client.HTTPConnection(*dp.server_address[:2], timeout=5)
    conn.putrequest("PUT", "/cut.bin")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"10\r\n0123456789abcdef\r\n8\r\n0123")
    conn.sock.shutdown(1)  # the client dies mid-chunk
    assert conn.getresponse().status == 400
    assert not (dp.root / "cut.bin").exists() and leftovers(dp.root) == []


def test_without_an_upload_token_put_is_not_allowed(tmp_path: Path) -> None:
    (tmp_path / "dp").mkdir()
    server = start(tmp_path / "dp")
    try:
        r = requests.put(server.url + "x", data=b"1", headers=AUTH, timeout=5)
        assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(UsageError, match="too short"):
        serve(tmp_path / "dp", "127.0.0.1", 0, upload_token="short")
