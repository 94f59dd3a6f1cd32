"""Blob ranges: coalescing (pure), and fetching from DPs (peagent serve) behind a fault proxy."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peagent.errors import FetchError
from peagent.image.dps import PIECE, RateLimit
from peagent.image.extents import Extent, coalesce
from peagent.image.ranges import FetchOptions, RangeFetcher
from peagent.server.dp import DPServer
from tests.support.dp import embedded_dp
from tests.support.faultproxy import Fault, FaultProxy

MIB = 1 << 20
BLOB = os.urandom(6 * MIB)
OTHER = os.urandom(6 * MIB)


def test_adjacent_extents_make_one_range_up_to_the_span() -> None:
    extents = [Extent(0, i * 100, 100) for i in range(10)]
    ranges = list(coalesce(extents, max_span=450))
    assert [(r.start, r.end) for r in ranges] == [(0, 400), (400, 800), (800, 1000)]
    assert ranges[1].extents == ((4, 0, 100), (5, 100, 100), (6, 200, 100), (7, 300, 100))


def test_gaps_split_unless_allowed() -> None:
    extents = [Extent(0, 0, 100), Extent(0, 150, 100), Extent(0, 1000, 10)]
    assert [(r.start, r.end) for r in coalesce(extents)] == [(0, 100), (150, 250), (1000, 1010)]
    assert [(r.start, r.end) for r in coalesce(extents, max_gap=50)] == [(0, 250), (1000, 1010)]


def test_interleaved_blobs_each_coalesce_and_come_in_order_of_first_need() -> None:
    extents = []
    for i in range(4):
        extents += [Extent(0, i * 10, 10), Extent(1, 500 + i * 20, 20)]
    ranges = list(coalesce(extents))
    assert [(r.blob, r.start, r.end) for r in ranges] == [(0, 0, 40), (1, 500, 580)]


def test_a_repeated_extent_inside_an_open_range_is_served_from_it() -> None:
    ranges = list(coalesce([Extent(0, 0, 100), Extent(0, 100, 100), Extent(0, 0, 100)]))
    assert len(ranges) == 1 and ranges[0].extents == ((0, 0, 100), (1, 100, 100), (2, 0, 100))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40), st.integers(1, 5)), min_size=1, max_size=40),
       st.integers(1, 30), st.integers(0, 3))
def test_every_extent_is_in_one_range_and_ranges_come_when_needed(spec, span, gap) -> None:
    extents = [Extent(b, s * 10, n * 10) for b, s, n in spec]
    ranges = list(coalesce(extents, max_span=span * 10, max_gap=gap * 10))
    seen = {}
    for r in ranges:
        for seq, offset, length in r.extents:
            assert seq not in seen
            e = extents[seq]
            assert (e.blob, e.start, e.length) == (r.blob, r.start + offset, length)
            assert r.start <= e.start and e.start + e.length <= r.end
            seen[seq] = r
        assert r.length <= max(span * 10, max(length for _, _, length in r.extents))
    assert sorted(seen) == list(range(len(extents)))
    firsts = [min(seq for seq, _, _ in r.extents) for r in ranges]
    assert firsts == sorted(firsts)  # a consumer walking the extents finds each range already given


def test_the_rate_limit_spreads_bytes_over_time() -> None:
    now = [0.0]
    slept = []
    limit = RateLimit(1000.0, clock=lambda: now[0], sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    for _ in range(10):
        limit.take(PIECE)
    assert sum(slept) == pytest.approx((10 * PIECE - limit.burst) / 1000.0)


@pytest.fixture
def dp(tmp_path: Path) -> Iterator[DPServer]:
    (tmp_path / "blob").write_bytes(BLOB)
    (tmp_path / "other").write_bytes(OTHER)
    with embedded_dp(tmp_path) as server:
        yield server


def fetch_all(urls, extents, **options) -> tuple[bytes, RangeFetcher]:
    options.setdefault("sleep", lambda s: None)
    options.setdefault("timeout", (2.0, 1.0))
    with RangeFetcher([urls], [len(BLOB)], FetchOptions(**options)) as fetcher:
        parts = []
        for handle in fetcher.stream(coalesce(extents, options.get("max_span", MIB))):
            handle.wait(handle.range.length)
            parts.append(bytes(handle.data))
        data = b"".join(parts)
    return data, fetcher


EXTENTS = [Extent(0, i * 256 << 10, 256 << 10) for i in range(24)]


def test_ranges_arrive_whole_and_in_order(dp) -> None:
    data, fetcher = fetch_all([dp.url + "blob"], EXTENTS[3:] + EXTENTS[:3])
    assert data == BLOB[3 << 18:] + BLOB[:3 << 18]
    assert fetcher.retries == 0 and fetcher.received == len(BLOB)


@pytest.mark.parametrize("fault", [
    Fault("drop", offset=1_000_000), Fault("truncate", offset=3_000_000), Fault("status", request=2, status=503),
    Fault("bad-range", request=1, shift=4096), Fault("ignore-range", request=3), Fault("stall", offset=2_500_000, seconds=3),
])
def test_a_bad_link_costs_at_most_the_bytes_in_flight(dp, fault) -> None:
    with FaultProxy(dp.url, [fault]) as proxy:
        data, fetcher = fetch_all([proxy.url + "blob"], EXTENTS, connections=2)
        proxy.wait_idle()
        extra = proxy.body_bytes("/blob") - len(BLOB)
    assert data == BLOB
    assert fetcher.retries >= 1, proxy.report()
    # An answer thrown away unread (wrong Content-Range, Range ignored) costs what the server had
    # pushed into the sockets before the client hung up: at most the range.
    assert extra <= PIECE + (MIB if fault.kind in ("ignore-range", "bad-range") else 0), proxy.report()


def test_a_dead_dp_fails_over_to_the_next(dp) -> None:
    with FaultProxy(dp.url, [Fault("status", status=503, times=None)]) as dead:
        data, fetcher = fetch_all([dead.url + "blob", dp.url + "blob"], EXTENTS)
    assert data == BLOB
    assert fetcher.origins[dp.url.rstrip("/")].received == len(BLOB)


def test_a_dp_without_the_blob_is_dropped(dp) -> None:
    data, _ = fetch_all([dp.url + "missing", dp.url + "blob"], EXTENTS)
    assert data == BLOB
    with pytest.raises(FetchError, match=r"no DP can serve missing any more \(http://127.0.0.1:\d+/missing: HTTP 404\)"):
        fetch_all([dp.url + "missing"], EXTENTS)


def test_a_blob_that_changes_on_the_dp_is_an_error_not_a_splice(dp) -> None:
    with FaultProxy(dp.url, [Fault("swap", request=2, to="/other", times=None)]) as proxy, \
            pytest.raises(FetchError, match=r"the blob changed on this DP"):
        fetch_all([proxy.url + "blob"], EXTENTS, connections=1)


def test_work_moves_away_from_a_slow_dp(dp) -> None:
    with FaultProxy(dp.url, [Fault("slow", rate=256 << 10, times=None)]) as slow:
        started = time.monotonic()
        data, fetcher = fetch_all([slow.url + "blob", dp.url + "blob"], EXTENTS, max_span=512 << 10)
        took = time.monotonic() - started
    assert data == BLOB
    fast = fetcher.origins[dp.url.rstrip("/")].received
    assert fast >= 4 * MIB, {o: s.received for o, s in fetcher.origins.items()}
    assert took < 8


def test_a_stall_everywhere_gives_up_with_a_precise_error(dp) -> None:
    with FaultProxy(dp.url, [Fault("stall", origin="headers", seconds=None, times=None)]) as proxy, \
            pytest.raises(FetchError, match=r"giving up on bytes 0-\d+ of blob after 2 attempts without progress"):
        fetch_all([proxy.url + "blob"], EXTENTS[:1], attempts=2, timeout=(1.0, 0.3))


def test_the_bandwidth_cap_holds(dp) -> None:
    started = time.monotonic()
    data, _ = fetch_all([dp.url + "blob"], EXTENTS[:8], limit_rate=4 * MIB)
    assert data == BLOB[:2 * MIB]
    assert time.monotonic() - started >= (2 * MIB - 1 * MIB) / (4 * MIB) * 0.9  # the burst is a quarter second


def test_a_local_file_is_a_source_too(tmp_path) -> None:
    (tmp_path / "blob").write_bytes(BLOB)
    data, _ = fetch_all([str(tmp_path / "blob")], EXTENTS[:4])
    assert data == BLOB[:MIB]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peagent test DP")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "dp.crt", directory / "dp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_with_a_custom_ca_bundle(tmp_path) -> None:
    import ssl

    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "blob").write_bytes(BLOB)
    cert, key = self_signed(tmp_path)
    server = DPServer(("127.0.0.1", 0), tmp_path / "root")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/blob"
    try:
        data, _ = fetch_all([url], EXTENTS[:4], ca=str(cert))
        assert data == BLOB[:MIB]
        with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch_all([url], EXTENTS[:1], attempts=1)
    finally:
        server.shutdown()
        server.server_close()


def test_a_range_is_handed_out_as_its_bytes_arrive(dp) -> None:
    with FaultProxy(dp.url, [Fault("slow", rate=512 << 10, times=None)]) as slow:
        fetcher = RangeFetcher([[slow.url + "blob"]], [len(BLOB)], FetchOptions(connections=1))
        started = time.monotonic()
        handle = next(fetcher.stream(coalesce([Extent(0, 0, MIB)])))
        handle.wait(64 << 10)
        assert time.monotonic() - started < 1.0  # the whole range takes 2 s at this rate
        assert bytes(handle.data[:64 << 10]) == BLOB[:64 << 10]
        fetcher.close()  # stops the rest at its next piece
        with pytest.raises(FetchError):
            handle.wait(MIB)


def test_ranges_are_sized_from_the_throughput() -> None:
    fetcher = RangeFetcher([["x"]], [1], FetchOptions())
    assert fetcher.span_hint() == 1 << 20  # nothing known yet
    limited = RangeFetcher([["x"]], [1], FetchOptions(limit_rate=6 * MIB))
    assert limited.span_hint() == 6 * MIB // 2 // 4  # half a second on each of 4 connections
    slow = RangeFetcher([["x"]], [1], FetchOptions(limit_rate=100_000))
    assert slow.span_hint() == 256 << 10  # never below
    for f in (fetcher, limited, slow):
        f.close()
