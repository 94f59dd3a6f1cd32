from __future__ import annotations

import os

import pytest

from peagent.errors import FetchError
from peagent.fetch import PIECE, NotFoundError, RangeReader, candidate_urls, fetch_bytes
from tests.support.flaky import FlakyServer

DATA = os.urandom(3 << 20)
FILES = {"/blob": DATA}


def read_all(urls: list[str], **kw) -> tuple[bytes, RangeReader]:
    kw.setdefault("sleep", lambda s: None)
    with RangeReader(urls, **kw) as r:
        chunks = []
        while chunk := r.read(256 << 10):
            chunks.append(chunk)
        return b"".join(chunks), r


def test_candidate_urls() -> None:
    assert candidate_urls("images/a.zst", ["http://d1", "http://d2/sub/"]) == [
        "http://d1/images/a.zst", "http://d2/sub/images/a.zst"]
    assert candidate_urls("/images/a.zst", ["http://d1/x"]) == ["http://d1/x/images/a.zst"]
    assert candidate_urls("https://other/a", ["http://d1"]) == ["https://other/a"]
    assert candidate_urls("a", []) == []


def test_plain_read() -> None:
    with FlakyServer(FILES) as s:
        data, r = read_all([s.url + "/blob"])
    assert data == DATA and r.retries == 0 and r.size == len(DATA)


def test_dropped_connections_resume_where_they_stopped() -> None:
    with FlakyServer(FILES, [("drop", 1000), ("drop", 700_000)]) as s:
        data, r = read_all([s.url + "/blob"])
    assert data == DATA
    assert r.retries == 2
    assert [q.get("Range") for q in s.requests] == [None, "bytes=1000-", "bytes=701000-"]
    assert all(q.get("If-Match") == '"v1"' for q in s.requests[1:])


def test_a_stalled_link_is_noticed_within_the_read_timeout_and_resumed() -> None:
    with FlakyServer(FILES, [("stall", 300_000, 3.0)]) as s:
        data, r = read_all([s.url + "/blob"], timeout=(2.0, 0.5))
    assert data == DATA and r.retries == 1
    # What was read before the stall, in whole pieces, is kept: at most a piece is fetched twice.
    assert s.requests[1]["Range"] == f"bytes={300_000 // PIECE * PIECE}-"


def test_server_errors_are_retried() -> None:
    with FlakyServer(FILES, [("status", 503), ("status", 500)]) as s:
        data, r = read_all([s.url + "/blob"])
    assert data == DATA and r.retries == 2


def test_a_server_that_ignores_range_is_skipped_forward() -> None:
    with FlakyServer(FILES, [("drop", 4096), ("ignore-range",)]) as s:
        data, _ = read_all([s.url + "/blob"])
    assert data == DATA


def test_fails_over_to_the_next_dp() -> None:
    with FlakyServer({}) as empty, FlakyServer(FILES, [("drop", 10)]) as good:
        data, r = read_all([empty.url + "/blob", good.url + "/blob"])
    assert data == DATA
    assert r.retries == 1
    assert len(empty.requests) == 1  # the DP without the file is not asked again
    assert [q.get("Range") for q in good.requests] == [None, "bytes=10-"]


def test_failover_does_not_send_one_dps_etag_to_another() -> None:
    # ETags are per server (nginx's are mtime and size): another DP's copy of the file has its own.
    with FlakyServer(FILES, [("drop", 1000)]) as a, FlakyServer(FILES, [("etag", '"b1"')]) as b:
        data, r = read_all([a.url + "/blob", b.url + "/blob"])
    assert data == DATA
    assert r.retries == 1
    assert [(q.get("Range"), q.get("If-Match")) for q in b.requests] == [("bytes=1000-", None)]


def test_not_found_anywhere() -> None:
    with FlakyServer({}) as a, FlakyServer({}) as b, pytest.raises(NotFoundError) as info:
        read_all([a.url + "/x", b.url + "/x"])
    assert str(info.value) == f"not found on any DP ({a.url}/x: HTTP 404, {b.url}/x: HTTP 404)"


def test_a_file_that_changes_during_the_transfer_is_an_error() -> None:
    with FlakyServer(FILES, [("drop", 100), ("etag", '"v2"')]) as s, pytest.raises(FetchError) as info:
        read_all([s.url + "/blob"])
    assert "changed during the transfer" in str(info.value)


def test_gives_up_after_the_attempts_without_progress() -> None:
    with FlakyServer(FILES, [("status", 503)] * 10) as s, pytest.raises(FetchError) as info:
        read_all([s.url + "/blob"], attempts=3)
    assert str(info.value).startswith("giving up after 3 attempts without progress; last: ")
    assert len(s.requests) == 3


def test_unreachable_dp() -> None:
    with pytest.raises(FetchError, match="giving up after 2 attempts"):
        read_all(["http://127.0.0.1:9/x"], attempts=2)


def test_fetch_bytes_limits_the_size() -> None:
    with FlakyServer({"/small": b"x" * 100}) as s:
        assert fetch_bytes([s.url + "/small"], 100, sleep=lambda t: None) == b"x" * 100
        with pytest.raises(FetchError, match="larger than the 99 bytes allowed"):
            fetch_bytes([s.url + "/small"], 99)
