from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from peagent.errors import UsageError
from peagent.fetch import RangeReader
from peagent.server.dp import DPServer, serve

BLOB = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def dp(tmp_path: Path) -> Iterator[DPServer]:
    root = tmp_path / "dp"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.img").write_bytes(BLOB)
    (tmp_path / "outside.txt").write_text("secret")
    (root / "linked.img").symlink_to(root / "images" / "a.img")
    server = serve(root, "127.0.0.1", 0, tmp_path / "status.jsonl")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def raw_get(server: DPServer, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """A request sent as written (requests would normalise '..' away)."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=5)
    conn.request("GET", path, headers=headers or {})
    return conn.getresponse()


def test_whole_file_with_validators(dp: DPServer) -> None:
    r = requests.get(dp.url + "images/a.img", timeout=5)
    assert r.status_code == 200 and r.content == BLOB
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["ETag"].startswith('"') and "Last-Modified" in r.headers
    head = requests.head(dp.url + "images/a.img", timeout=5)
    assert head.headers["Content-Length"] == str(len(BLOB)) and head.content == b""


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-0", 0, 0), ("bytes=1000-", 1000, len(BLOB) - 1), ("bytes=-10", len(BLOB) - 10, len(BLOB) - 1),
    ("bytes=5-999999999", 5, len(BLOB) - 1),
])
def test_ranges(dp: DPServer, header: str, start: int, end: int) -> None:
    r = requests.get(dp.url + "images/a.img", headers={"Range": header}, timeout=5)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(BLOB)}"
    assert r.content == BLOB[start:end + 1]


def test_unsatisfiable_and_multiple_ranges(dp: DPServer) -> None:
    r = requests.get(dp.url + "images/a.img", headers={"Range": f"bytes={len(BLOB)}-"}, timeout=5)
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(BLOB)}"
    r = requests.get(dp.url + "images/a.img", headers={"Range": "bytes=0-1,5-6"}, timeout=5)
    assert r.status_code == 200 and len(r.content) == len(BLOB)


def test_if_match_and_if_range(dp: DPServer) -> None:
    etag = requests.head(dp.url + "images/a.img", timeout=5).headers["ETag"]
    assert requests.get(dp.url + "images/a.img", headers={"If-Match": '"other"'}, timeout=5).status_code == 412
    r = requests.get(dp.url + "images/a.img", headers={"If-Match": etag, "Range": "bytes=1-1"}, timeout=5)
    assert r.status_code == 206
    r = requests.get(dp.url + "images/a.img", headers={"If-Range": '"old"', "Range": "bytes=1-1"}, timeout=5)
    assert r.status_code == 200


@pytest.mark.parametrize("path", ["/../outside.txt", "/images/../../outside.txt", "/%2e%2e/outside.txt",
                                  "/images/%2E%2E/%2E%2E/outside.txt"])
def test_traversal_is_refused(dp: DPServer, path: str) -> None:
    r = raw_get(dp, path)
    assert r.status == 400
    assert b"secret" not in r.read()


def test_directories_and_missing_files_are_404(dp: DPServer) -> None:
    assert raw_get(dp, "/images/").status == 404
    assert raw_get(dp, "/images").status == 404
    assert raw_get(dp, "/nothing").status == 404


def test_symlinks_placed_by_the_administrator_are_served(dp: DPServer) -> None:
    assert requests.get(dp.url + "linked.img", timeout=5).content == BLOB


def test_the_agent_reads_through_it(dp: DPServer) -> None:
    with RangeReader([dp.url + "images/a.img"]) as r:
        assert r.read() == BLOB



def test_serving_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot serve .*/nope: not a directory"):
        serve(tmp_path / "nope", "127.0.0.1", 0)
