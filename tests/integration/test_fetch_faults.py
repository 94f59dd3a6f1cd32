"""The agent's image transfer against real nginx behind a bad network (tests.support.faultproxy).

nginx serves the DP directory with the shipped server block (tests.support.nginx); between it
and the agent, fault proxies drop, stall, truncate, refuse, mislabel, slow down, corrupt and swap
on seeded schedules. What must hold, schedule after schedule:

* with faults a correct client can get through (:data:`RECOVERABLE`), ``RangeReader`` returns
  every byte, and ``write_image`` (raw and zstd) ends with a byte-identical target;
* each forced disconnect costs at most a piece (``fetch.PIECE``) of refetched data, plus what was
  in flight for answers the reader had to throw away unread, plus what it skips when a server
  ignores Range;
* faults that make success impossible (a bit flipped on every DP, the blob replaced on the DP) end
  in a precise error, never in success.

A failing test prints its schedule, what fired where, and every request with the bytes it cost.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from peagent.errors import FetchError, VerifyError
from peagent.fetch import PIECE, RangeReader
from peagent.image.stream import write_image
from tests.support import dp as dp_support
from tests.support.faultproxy import RECOVERABLE, Fault, FaultProxy, FaultSchedule
from tests.support.images import mixed_image, zstd
from tests.support.nginx import Nginx

pytestmark = pytest.mark.root

SIZE = 4 << 20
# What a reader may have to throw away unread when it abandons an answer (a mislabelled 206): the
# client's receive window on a fresh connection plus the proxy's send queue (measured: <= 320 KiB).
IN_FLIGHT = 512 << 10
READER = {"timeout": (2.0, 0.5), "sleep": lambda seconds: None}


@dataclass
class Image:
    path: str  # on the DP, as a URL path
    data: bytes  # what the DP serves
    image: bytes  # what a target must hold in the end (the decompressed data)
    compression: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.image).hexdigest()


@dataclass
class Site:
    nginx: Nginx
    images: dict[str, Image]  # "raw", "zstd", "other-raw", "other-zstd"


def _concatenated_zstd(src: Path, dst: Path, parts: int = 2) -> bytes:
    """Frames made by the zstd CLI (with their checksums, as real images have), concatenated as
    pzstd and zstd -T write them."""
    data = src.read_bytes()
    step = -(-len(data) // parts)
    blob = b""
    for i in range(parts):
        piece = dst.with_suffix(f".part{i}")
        piece.write_bytes(data[i * step:(i + 1) * step])
        blob += zstd(piece, piece.with_suffix(".zst")).read_bytes()
        piece.unlink()
        piece.with_suffix(".zst").unlink()
    dst.write_bytes(blob)
    return blob


def _publish(root: Path, seed: int, mtime: float) -> dict[str, Image]:
    images = root / "images"
    images.mkdir(exist_ok=True)
    images.chmod(0o755)
    raw = mixed_image(images / f"image{seed}.img", SIZE, seed=seed)
    blob = _concatenated_zstd(images / f"image{seed}.img", images / f"image{seed}.img.zst")
    for path in (images / f"image{seed}.img", images / f"image{seed}.img.zst"):
        path.chmod(0o644)
        # nginx's ETag is mtime and size: distinct mtimes make distinct ETags for files of one size.
        os.utime(path, (mtime, mtime))
    return {"raw": Image(f"/images/image{seed}.img", raw, raw, "none"),
            "zstd": Image(f"/images/image{seed}.img.zst", blob, raw, "zstd")}


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    if os.geteuid() != 0:
        pytest.skip("needs root: nginx's workers drop privileges to nobody")
    with Nginx() as nginx:
        images = _publish(nginx.root, 11, 1_700_000_000)
        others = _publish(nginx.root, 12, 1_700_000_600)
        images.update({f"other-{k}": v for k, v in others.items()})
        yield Site(nginx, images)


@contextlib.contextmanager
def explained(*proxies: FaultProxy, site: Site | None = None) -> Iterator[None]:
    """On failure, print each proxy's schedule, strikes and requests (and nginx's logs)."""
    try:
        yield
        for proxy in proxies:
            assert not proxy.errors, "the fault proxy itself failed:\n" + "\n".join(proxy.errors)
    except BaseException:
        for i, proxy in enumerate(proxies):
            print(f"===== proxy {i} ({proxy.url}) =====\n{proxy.report()}")
        if site is not None:
            print(site.nginx.logs()[-20000:])
        raise


def read_all(urls: Sequence[str]) -> tuple[bytes, RangeReader]:
    with RangeReader(urls, **READER) as reader:  # type: ignore[arg-type]
        chunks = []
        while chunk := reader.read(256 << 10):
            chunks.append(chunk)
        return b"".join(chunks), reader


def write(urls: Sequence[str], image: Image, target: Path) -> None:
    with RangeReader(urls, **READER) as reader:  # type: ignore[arg-type]
        result = write_image(reader, str(target), compression=image.compression, sha256=image.sha256,
                             size=len(image.image))
    assert result.size == len(image.image)


def allowed_waste(proxies: Sequence[FaultProxy], path: str) -> tuple[int, int, list[str]]:
    """(body bytes of ``path`` sent in all, the extra that the faults that fired allow, why)."""
    sent, allowed, why = 0, 0, []
    for proxy in proxies:
        proxy.wait_idle()
        for e in proxy.exchanges:
            if e.method != "GET" or e.path != path:
                continue
            sent += e.sent
            if e.interrupted:
                allowed += PIECE
                why.append(f"#{e.number} {e.outcome}: a piece")
            if any(f.startswith("bad-range") for f in e.faults):
                allowed += IN_FLIGHT
                why.append(f"#{e.number} mislabelled, abandoned unread: in flight")
            if e.status == 200 and "Range" in e.headers:
                skipped = int(e.headers["Range"].removeprefix("bytes=").split("-")[0])
                allowed += skipped
                why.append(f"#{e.number} Range ignored: {skipped} skipped")
    return sent, allowed, why


def assert_bounded_waste(proxies: Sequence[FaultProxy], image: Image) -> None:
    sent, allowed, why = allowed_waste(proxies, image.path)
    waste = sent - len(image.data)
    assert 0 <= waste <= allowed, f"{waste} extra bytes fetched; the faults allow {allowed}: {why}"


def assert_digest_error(message: str, actual: str, expected: str) -> None:
    """A digest mismatch that names both digests: what was written, and what it should have been."""
    assert re.search(rf"sha256 of the {SIZE} bytes .*\b{actual}\b.*expected {expected}\b", message), message


def random_faults(seed: int, image: Image, kinds: Sequence[str] = RECOVERABLE) -> FaultSchedule:
    return FaultSchedule.random(seed, len(image.data), 1 + seed % 6, kinds, path=image.path)


# --- RangeReader: every byte, whatever the network does -----------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_range_reader_gets_every_byte_through_faults(site: Site, seed: int) -> None:
    image = site.images["zstd" if seed % 2 else "raw"]
    with FaultProxy(site.nginx.url, random_faults(seed, image)) as proxy, explained(proxy, site=site):
        data, reader = read_all([proxy.url + image.path.lstrip("/")])
        assert data == image.data
        assert reader.size == len(image.data)
        assert_bounded_waste([proxy], image)


def test_each_kind_of_fault_alone_costs_what_it_should(site: Site) -> None:
    """One of each recoverable kind in one transfer, placed so that each one surely strikes."""
    image = site.images["raw"]
    schedule = FaultSchedule([
        Fault("drop", offset=300_000, path=image.path),
        Fault("status", request=1, status=503, retry_after="120", path=image.path),
        Fault("truncate", offset=900_000, path=image.path),
        Fault("stall", offset=1_500_000, path=image.path),  # forever: the read timeout notices
        Fault("bad-range", request=4, shift=4096, path=image.path),
        Fault("stall", origin="headers", request=5, path=image.path),
        Fault("ignore-range", request=6, path=image.path),
        Fault("stall", request=6, offset=2_500_000, seconds=0.2, path=image.path),  # shorter than the timeout
        Fault("slow", request=6, rate=16 << 20, path=image.path),
    ])
    with FaultProxy(site.nginx.url, schedule) as proxy, explained(proxy, site=site):
        started = time.monotonic()
        data, reader = read_all([proxy.url + image.path.lstrip("/")])
        assert data == image.data
        assert sorted(f.index for f in proxy.fired) == list(range(len(schedule)))
        assert reader.retries == 6  # drop, 503, truncate, stall, bad-range, stall before the answer
        proxy.wait_idle()
        outcomes = [e.outcome for e in proxy.exchanges]
        assert outcomes == ["reset", "complete", "truncated", "stalled", "client-gone", "stalled", "complete"]
        gets = proxy.exchanges
        # A reset loses the piece being read; a clean close loses nothing; a stall loses the piece.
        assert gets[1].headers["Range"] == f"bytes={300_000 // PIECE * PIECE}-"
        assert gets[3].headers["Range"] == f"bytes={900_000}-"
        assert gets[4].headers["Range"] == f"bytes={1_500_000 - (1_500_000 - 900_000) % PIECE}-"
        assert all(e.headers.get("If-Match") for e in gets[1:])
        assert_bounded_waste([proxy], image)
        assert time.monotonic() - started < 10


# --- write_image: a byte-identical target, or an error -------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_stream_writer_ends_byte_identical_through_faults(site: Site, seed: int, tmp_path: Path) -> None:
    image = site.images["zstd" if seed % 2 else "raw"]
    target = tmp_path / "target.img"
    target.write_bytes(b"\xa5" * (SIZE + 12345))  # an old, longer image: nothing of it may remain
    with FaultProxy(site.nginx.url, random_faults(1000 + seed, image)) as proxy, explained(proxy, site=site):
        write([proxy.url + image.path.lstrip("/")], image, target)
        assert target.read_bytes() == image.image
        assert_bounded_waste([proxy], image)


@pytest.mark.parametrize("seed", range(12))
def test_a_bit_flip_on_every_dp_is_never_success(site: Site, seed: int, tmp_path: Path) -> None:
    image = site.images["zstd" if seed % 2 else "raw"]
    rng = random.Random(seed)
    offset, mask = rng.randrange(len(image.data)), 1 << rng.randrange(8)
    flip = Fault("flip", offset=offset, mask=mask, times=None, path=image.path)  # every answer carrying it
    schedules = [FaultSchedule([*random_faults(base + seed, image), flip]) for base in (2000, 3000)]
    with FaultProxy(site.nginx.url, schedules[0]) as a, FaultProxy(site.nginx.url, schedules[1]) as b, \
            explained(a, b, site=site):
        urls = [p.url + image.path.lstrip("/") for p in (a, b)]
        with pytest.raises(VerifyError) as info:
            write(urls, image, tmp_path / "target.img")
        assert any(f.fault is flip for f in a.fired + b.fired)
        if image.compression == "none":
            bad = bytearray(image.data)
            bad[offset] ^= mask
            assert_digest_error(str(info.value), hashlib.sha256(bad).hexdigest(), image.sha256)
        else:
            # The frames carry checksums (the zstd CLI writes them): caught there, or in decoding.
            assert "corrupt zstd data" in str(info.value)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_corrupt_zstd_data_is_a_verify_error(site: Site, tmp_path: Path, where: float) -> None:
    """Not zstandard.ZstdError, which would escape as an internal error (exit 1 instead of 5)."""
    image = site.images["zstd"]
    flip = Fault("flip", offset=int(len(image.data) * where), times=None)
    with FaultProxy(site.nginx.url, [flip]) as proxy, explained(proxy, site=site), \
            pytest.raises(VerifyError, match="corrupt zstd data"):
        write([proxy.url + image.path.lstrip("/")], image, tmp_path / "target.img")


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("same_etag", [False, True], ids=["new-etag", "same-etag"])
def test_a_blob_replaced_during_the_transfer_is_an_error(site: Site, seed: int, same_etag: bool,
                                                         tmp_path: Path) -> None:
    """The first answer breaks off; from then on the DP serves another file. With its own ETag,
    If-Match refuses to resume into it; behind a cache that keeps the old ETag, the splice is
    caught by size (zstd: the blobs differ in length; or the DP refuses a range beyond its file's
    end) or by the final sha256 (raw: same length)."""
    kind = "zstd" if seed % 2 else "raw"
    image, other = site.images[kind], site.images[f"other-{kind}"]
    # Half the zstd seeds break off before the other (smaller) blob's end, half after it.
    limit = min(len(image.data), len(other.data)) if seed % 4 == 1 else len(image.data)
    cut = random.Random(seed).randrange(1, limit)
    schedule = FaultSchedule([
        Fault("drop", request=0, offset=cut, origin="body", path=image.path),
        Fault("swap", request=1, to=other.path, same_etag=same_etag, times=None, path=image.path),
    ], seed)
    with FaultProxy(site.nginx.url, schedule) as proxy, explained(proxy, site=site):
        url = proxy.url + image.path.lstrip("/")
        with pytest.raises((FetchError, VerifyError)) as info:
            write([url], image, tmp_path / "target.img")
        resumed = int(proxy.exchanges[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
        if not same_etag:
            assert info.type is FetchError
            assert str(info.value) == (f"{url} changed during the transfer (its ETag no longer matches); "
                                       "restart the deployment")
        elif resumed >= len(other.data):
            # The DP's file is now shorter than where the transfer stands: 416, for the DP's only copy.
            assert info.type is FetchError
            assert str(info.value) == f"refused by every DP ({url}: HTTP 416)"
        elif len(other.data) != len(image.data):
            assert info.type is FetchError
            assert str(info.value) == (f"{url} is {len(other.data)} bytes, but the transfer began with "
                                       f"{len(image.data)}: the DPs do not hold the same file")
        else:
            spliced = image.data[:resumed] + other.data[resumed:]
            assert info.type is VerifyError
            assert_digest_error(str(info.value), hashlib.sha256(spliced).hexdigest(), image.sha256)


# --- several DPs -----------------------------------------------------------------------------------

PERMANENT = {
    "503": [Fault("status", request=1, status=503, times=None)],
    "reset": [Fault("drop", request=1, origin="headers", times=None)],
    "stall": [Fault("stall", request=1, origin="headers", times=None)],
    "short": [Fault("truncate", request=1, offset=10_000, origin="body", times=None)],
}


@pytest.mark.parametrize("seed", range(8))
def test_a_dp_that_fails_for_good_is_left_for_the_others(site: Site, seed: int, tmp_path: Path) -> None:
    """DP A serves part of the image, then fails on every request (each seed its own way: 503,
    reset, silence, short answers); DP B, flaky itself, must carry the transfer to the end."""
    image = site.images["zstd" if seed % 2 else "raw"]
    how = list(PERMANENT)[seed % len(PERMANENT)]
    cut = random.Random(seed).randrange(len(image.data) // 4, len(image.data) // 2)
    failing = FaultSchedule([Fault("drop", request=0, offset=cut, path=image.path), *PERMANENT[how]], seed)
    with FaultProxy(site.nginx.url, failing) as a, FaultProxy(site.nginx.url, random_faults(4000 + seed, image)) as b, \
            explained(a, b, site=site):
        target = tmp_path / "target.img"
        write([p.url + image.path.lstrip("/") for p in (a, b)], image, target)
        assert target.read_bytes() == image.image
        if how != "short":  # A's only data is its first answer's
            assert [e.number for e in a.exchanges if e.sent] == [0]
        assert_bounded_waste([a, b], image)


def test_a_dp_that_is_not_there_at_all(site: Site, tmp_path: Path) -> None:
    image = site.images["raw"]
    with FaultProxy(site.nginx.url, random_faults(5000, image)) as good, explained(good, site=site):
        dead = FaultProxy(site.nginx.url)  # bound, then closed: its port refuses connections
        dead.close()
        target = tmp_path / "target.img"
        write([dead.url + image.path.lstrip("/"), good.url + image.path.lstrip("/")], image, target)
        assert target.read_bytes() == image.image


def test_failover_between_dps_holding_their_own_copies(tmp_path: Path) -> None:
    """Two DPs, each an nginx with its own copy of the image (copied at different times, so with
    different ETags: nginx's ETag is the file's mtime and size). The first breaks off mid-transfer
    and stays down; the second must take over, though it cannot honour the first one's ETag."""
    if os.geteuid() != 0:
        pytest.skip("needs root: nginx's workers drop privileges to nobody")
    with Nginx() as one, Nginx() as two:
        image = _publish(one.root, 21, 1_700_000_000)["raw"]
        _publish(two.root, 21, 1_700_000_999)
        schedule = [Fault("drop", request=0, offset=SIZE // 2), Fault("status", request=1, times=None)]
        with FaultProxy(one.url, schedule) as a, explained(a):
            target = tmp_path / "target.img"
            write([a.url + image.path.lstrip("/"), two.url + image.path.lstrip("/")], image, target)
            assert target.read_bytes() == image.image
        resumed = [e for e in two.access() if e["path"] == image.path]
        assert [e["status"] for e in resumed] == ["206"]
        assert resumed[0]["if_match"] == "", "another DP's ETag means nothing to this one"


# --- the embedded DP and parallel clients -----------------------------------------------------------

@pytest.fixture
def embedded_dp(site: Site) -> Iterator[str]:
    """``peagent serve`` (in a thread) over the same directory as nginx."""
    with dp_support.embedded_dp(site.nginx.root) as server:
        yield server.url


@pytest.mark.parametrize("seed", range(6))
def test_behind_peagent_serve_too(site: Site, embedded_dp: str, seed: int, tmp_path: Path) -> None:
    image = site.images["zstd" if seed % 2 else "raw"]
    with FaultProxy(embedded_dp, random_faults(6000 + seed, image)) as proxy, explained(proxy):
        target = tmp_path / "target.img"
        write([proxy.url + image.path.lstrip("/")], image, target)
        assert target.read_bytes() == image.image
        assert_bounded_waste([proxy], image)


def test_parallel_readers_share_one_schedule(site: Site) -> None:
    """Four readers at once through one proxy: each fault strikes once, whoever meets it."""
    image = site.images["raw"]
    faults = FaultSchedule.random(7000, len(image.data), 8, ("drop", "truncate", "stall", "status"),
                                  path=image.path, stall_seconds=(None,))
    results: dict[int, bytes] = {}
    with FaultProxy(site.nginx.url, faults) as proxy, explained(proxy, site=site):
        def run(i: int) -> None:
            results[i] = read_all([proxy.url + image.path.lstrip("/")])[0]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [results.get(i) == image.data for i in range(4)] == [True] * 4
        fired = [f.index for f in proxy.fired]
        assert len(fired) == len(set(fired)), "a fault meant to strike once struck twice"
        assert len({e.connection for e in proxy.exchanges}) >= 4
