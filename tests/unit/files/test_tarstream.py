"""The tar reader (peagent.files.tarstream over peagent.files.tarheader): what it reads agrees with
Python's tarfile and GNU tar on archives they write, and a malformed, truncated or oversized
header is a typed error (ImageError: damaged; UnsafeArchiveError: over a limit) naming where."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from peagent.errors import ImageError, UnsafeArchiveError
from peagent.files import pax, tarstream
from peagent.files.extract import apply_tar
from peagent.files.tarheader import Member, number
from peagent.files.tarstream import MAX_CHAIN, DamagedStream, TarStream
from tests.unit.files.tarcraft import Pipe, archive, entry, file, listing

LIMIT = 1 << 20


def read_all(data: bytes, max_header: int = LIMIT) -> list[tuple[Member, bytes]]:
    """Every member, with its stored data (holes left out), as TarStream hands them over."""
    out = []
    with TarStream(Pipe(data), max_header=max_header) as tar:
        for member in tar:
            stored = sum(n for _, n in member.sparse) if member.sparse is not None else \
                member.size if member.isreg() else 0
            out.append((member, b"".join(bytes(piece) for piece in tar.data(stored))))
    return out


def tarfile_view(data: bytes) -> list[tuple]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, m.type, m.size, m.mode, m.uid, m.gid, int(m.mtime), m.linkname,
                 tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()]


def our_view(data: bytes) -> list[tuple]:
    return [(m.name, m.type, m.size, m.mode, m.uid, m.gid, m.mtime, m.linkname, content)
            for m, content in read_all(data)]


def block(name: bytes, kind: bytes, size: int = 0, **kw: object) -> bytes:
    return pax.header(name, kind, kw.pop("mode", 0o644), 0, 0, size, 1_700_000_000, **kw)  # type: ignore[arg-type]


def extended(kind: bytes, payload: bytes) -> bytes:
    return block(b"././@PaxHeader", kind, len(payload)) + pax.padded(payload)


END = bytes(1024)


# --- what it reads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_it_reads_what_tarfile_reads(fmt) -> None:
    deep = "/".join(["component"] * 12) + "/file-with-a-long-name"  # ustar prefix, GNU L, or pax path
    link = "/".join(["t"] * (40 if fmt == tarfile.USTAR_FORMAT else 60))  # ustar: 100 bytes at most
    entries = [entry("dir", tarfile.DIRTYPE, mode=0o755), file("dir/a", b"A" * 1000, uid=1000, gid=100),
               file(deep, b"deep"), entry("dir/l", tarfile.SYMTYPE, link=link),
               entry("dir/h", tarfile.LNKTYPE, link="dir/a"), file("empty"), file("\u00e9t\u00e9", b"utf-8 name")]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    assert our_view(out.getvalue()) == tarfile_view(out.getvalue())


def test_base_256_numbers_and_pax_overrides() -> None:
    big = entry("f", uid=1 << 30, gid=(1 << 21) + 5, data=b"x", mtime=-1000)[0]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:  # base-256 for what octal cannot hold
        tar.addfile(big, io.BytesIO(b"x"))
    (member, data), = read_all(out.getvalue())
    assert (member.uid, member.gid, member.mtime, data) == (1 << 30, (1 << 21) + 5, -1000, b"x")
    assert number(b"\x80\x00\x00\x00\x00\x00\x01\x00", "x") == 256
    assert number(b"\xff" * 8, "x") == -1
    assert number(b"  644 \x00\x00", "x") == 0o644 and number(b"\x00" * 8, "x") == 0
    assert number(b"0000644\x00junk", "x") == 0o644


def test_a_global_pax_header_applies_to_every_entry_after_it() -> None:
    """git archive writes one (comment=<commit>); its records stand for every later entry's own."""
    data = (extended(b"g", pax.record("comment", b"c0ffee") + pax.record("mtime", b"5.5"))
            + pax.padded(block(b"a", b"0", 1) + pax.padded(b"1"))
            + extended(b"x", pax.record("mtime", b"7.25")) + block(b"b", b"0") + END)
    (a, _), (b, _) = read_all(data)
    assert a.pax_headers == {"comment": "c0ffee", "mtime": "5.5"}
    assert b.pax_headers == {"comment": "c0ffee", "mtime": "7.25"}


def test_data_comes_as_views_across_pieces(monkeypatch) -> None:
    monkeypatch.setattr(tarstream, "PIECE", 700)  # headers and data straddle the reads
    content = os.urandom(10_000)
    data = archive(file("big", content), file("small", b"s" * 600), file("x" * 150, b"long name"))
    assert [(m.name, d) for m, d in read_all(data)] == [("big", content), ("small", b"s" * 600),
                                                         ("x" * 150, b"long name")]
    with TarStream(Pipe(data), max_header=LIMIT) as tar:
        member = next(iter(tar))
        pieces = list(tar.data(member.size))
        assert all(isinstance(p, memoryview) and len(p) <= 700 for p in pieces) and len(pieces) > 10


def test_a_member_s_unread_data_is_skipped() -> None:
    data = archive(file("a", b"A" * 5000), file("b", b"B"))
    with TarStream(Pipe(data), max_header=LIMIT) as tar:
        assert [m.name for m in tar] == ["a", "b"]


def test_v7_directories_and_the_ustar_prefix() -> None:
    data = block(b"olddir/", b"\0") + _with_prefix(block(b"name", b"0", 2), b"pre/fix") + pax.padded(b"ok") + END
    (d, _), (f, content) = read_all(data)
    assert (d.name, d.isdir()) == ("olddir", True)
    assert (f.name, content) == ("pre/fix/name", b"ok")


def _with_prefix(header: bytes, prefix: bytes) -> bytes:
    raw = bytearray(header)
    raw[345:345 + len(prefix)] = prefix
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw)
    return bytes(raw)


# --- sparse files ------------------------------------------------------------------------------------


def sparse_source(path: Path, pieces: int) -> bytes:
    with path.open("wb") as f:
        f.truncate(pieces * (64 << 10) + 4096)
        for i in range(pieces):
            f.seek(i * (64 << 10) + 4096)
            f.write(bytes([65 + i]) * 3000)
    return path.read_bytes()


@pytest.mark.parametrize(("fmt", "version"), [("gnu", None), ("pax", "1.0"), ("pax", "0.1"), ("pax", "0.0")])
def test_gnu_sparse_formats(tmp_path, fmt, version) -> None:
    """Old GNU (10 extents: the header holds 4, an extension block the rest) and the pax forms."""
    content = sparse_source(tmp_path / "s.img", 10)
    options = ["--sparse", f"--format={fmt}"] + ([f"--sparse-version={version}"] if version else [])
    data = subprocess.run(["tar", *options, "-cf", "-", "-C", str(tmp_path), "s.img"], check=True,
                          capture_output=True).stdout
    (member, stored), = read_all(data)
    assert (member.name, member.size) == ("s.img", len(content))
    assert len([extent for extent in member.sparse if extent[1]]) == 10
    rebuilt = bytearray(member.size)
    at = 0
    for offset, length in member.sparse:
        rebuilt[offset:offset + length] = stored[at:at + length]
        at += length
    assert bytes(rebuilt) == content and at == len(stored)


def test_an_unknown_sparse_version_is_refused_not_read_as_data() -> None:
    data = extended(b"x", pax.record("GNU.sparse.major", b"2") + pax.record("GNU.sparse.minor", b"0")) \
        + block(b"s", b"0", 512) + bytes(512) + END
    with pytest.raises(ImageError, match=r"GNU sparse format 2\.0 is not one peagent reads"):
        read_all(data)


def test_a_sparse_map_that_claims_more_data_than_the_entry_holds(tmp_path) -> None:
    data = archive(file("s", b"x" * 100, pax={"GNU.sparse.size": "5000", "GNU.sparse.map": "0,100,1000,3000"}))
    with TarStream(Pipe(data), max_header=LIMIT) as tar:
        member = next(iter(tar))
        with pytest.raises(DamagedStream, match="declare 3100 bytes of data, but the entry holds 100"):
            tar.data(3100)
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(ImageError, match="tar entry 's': the stream is damaged or cut short: its headers declare"):
        apply_tar(Pipe(data), target)
    assert member.size == 5000


# --- malformed headers: typed errors, where ----------------------------------------------------------


def test_bad_checksums() -> None:
    good = archive(file("a", b"1"), file("b", b"2"))
    bad = bytearray(good)
    bad[148] ^= 1
    with pytest.raises(ImageError, match=r"^the file image is not a tar stream: bad checksum$"):
        read_all(bytes(bad))
    bad = bytearray(good)
    bad[1024 + 148] ^= 1
    with pytest.raises(ImageError, match=r"damaged header \(bad checksum\), at byte 1024, after the entry 'a'"):
        read_all(bytes(bad))


def test_a_signed_checksum_is_accepted() -> None:
    """Old Sun and NeXT tars summed signed chars: a name byte over 127 counts 256 less."""
    raw = bytearray(block("\u00e9".encode(), b"0"))
    raw[148:156] = b"%06o\0 " % (sum(raw[:148]) + 256 + sum(raw[156:]) - 256 * 2)  # two bytes over 127
    assert [m.name for m, _ in read_all(bytes(raw) + END)] == ["\u00e9"]


@pytest.mark.parametrize(("field", "at"), [("size", 124), ("mode", 100), ("uid", 108), ("mtime", 136)])
def test_a_number_field_that_is_not_octal(field, at) -> None:
    raw = bytearray(archive(file("a", b"1"), file("b", b"2")))
    raw[1024 + at:1024 + at + 3] = b"9x-"
    raw[1024 + 148:1024 + 156] = b" " * 8
    raw[1024 + 148:1024 + 156] = b"%06o\0 " % sum(raw[1024:1536])
    with pytest.raises(ImageError, match=rf"damaged header \(its {field} field b'9x-.*' is not an octal number\), "
                                         r"at byte 1024, after the entry 'a'"):
        read_all(bytes(raw))


@pytest.mark.parametrize(("records", "problem"), [
    (b"30 mtime=1700000000.5\n", "cut short or malformed"),  # the length runs past the header
    (b"10 mtime=1\n", "cut short or malformed"),  # the length ends before the newline
    (b"x mtime=1\n", "has no length"),
    (b"9 mtime1\n", "is not keyword=value"),
    (pax.record("size", b"12x45678"), "its pax size '12x45678' is not a decimal number"),
    (pax.record("uid", b"-1000"), "its pax uid '-1000' is not a decimal number"),
    (pax.record("GNU.sparse.map", b"0,10,20") + pax.record("GNU.sparse.size", b"40"), "an odd count of numbers"),
])
def test_malformed_pax_records(records, problem) -> None:
    data = archive(file("a", b"1"))[:1024] + extended(b"x", records) + block(b"b", b"0") + END
    with pytest.raises(ImageError, match=rf"damaged header \(.*{problem}.*\), at byte 1024, after the entry 'a'"):
        read_all(data)


def test_oversized_extended_headers_are_refused_before_they_are_read() -> None:
    claims = block(b"././@PaxHeader", b"x", 4 << 30)  # 4 GiB declared, 512 bytes there
    for kind in (b"x", b"g", b"L", b"K"):
        with pytest.raises(UnsafeArchiveError, match=r"at byte 0 of the stream take more than max_pax_header "
                                                     r"\(1048576 bytes\): refused before reading them"):
            read_all(_kind(claims, kind))
    two = extended(b"x", pax.record("comment", b"a" * 600)) + extended(b"L", b"n" * 600 + b"\0") \
        + block(b"a", b"0") + END
    with pytest.raises(UnsafeArchiveError, match=r"take more than max_pax_header \(1000 bytes\)"):
        read_all(two, max_header=1000)  # the extensions of one entry count together
    assert [m.name for m, _ in read_all(two, max_header=1300)] == ["n" * 600]


def _kind(header: bytes, kind: bytes) -> bytes:
    raw = bytearray(header)
    raw[156:157] = kind
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw)
    return bytes(raw)


def test_global_headers_are_bounded_together() -> None:
    """Each is under the limit, and so is what comes before each entry; what they add up to is not."""
    data = b"".join(extended(b"g", pax.record(f"k{i}", b"v" * 400)) + block(b"a%d" % i, b"0") for i in range(3)) + END
    with pytest.raises(UnsafeArchiveError, match=r"global pax headers .* hold more than max_pax_header \(1000"):
        read_all(data, max_header=1000)


def test_chains_of_extended_headers_are_bounded() -> None:
    data = b"".join(extended(b"x", pax.record("comment", b"c")) for _ in range(MAX_CHAIN + 1)) \
        + block(b"a", b"0") + END
    with pytest.raises(UnsafeArchiveError, match=f"more than {MAX_CHAIN} chained extended headers"):
        read_all(data)
    assert [m.name for m, _ in read_all(data[512 * 2:])] == ["a"]


# --- endings -----------------------------------------------------------------------------------------


def test_truncations_are_errors() -> None:
    good = archive(file("a", b"1"), file("b", b"x" * 2000))
    with pytest.raises(ImageError, match="not a tar stream: empty file"):
        read_all(b"")
    with pytest.raises(ImageError, match="not a tar stream: the stream ends inside a header"):
        read_all(good[:300])
    with pytest.raises(ImageError, match=r"ends without the end-of-archive marker: it is truncated, at byte 1024, "
                                         r"after the entry 'a'"):
        read_all(good[:1024])
    with pytest.raises(ImageError, match=r"damaged header \(the stream ends inside a header: it is truncated\), "
                                         r"at byte 1024"):
        read_all(good[:1024 + 100])
    with pytest.raises(DamagedStream, match="unexpected end of data"):
        read_all(good[:1536 + 1000])
    with pytest.raises(ImageError, match="damaged after the entry 'b': unexpected end of data"), \
            TarStream(Pipe(good[:1536 + 1000]), max_header=LIMIT) as tar:
        list(tar)  # the data not read is skipped: the end is met there
    cut = extended(b"x", pax.record("path", b"p" * 200))
    with pytest.raises(ImageError, match="not a tar stream: the stream ends inside an extended header"):
        read_all(cut[:700])
    with pytest.raises(ImageError, match="the end-of-archive marker follows an extended header"):
        read_all(cut + END)


def test_only_zeros_may_follow_the_end_marker() -> None:
    good = archive(file("a", b"1"))
    assert [m.name for m, _ in read_all(good + bytes(10240))] == ["a"]
    assert read_all(END) == []
    with pytest.raises(ImageError, match=r"has data after its end-of-archive marker \(at byte 1024, after the entry "
                                         r"'a'\): it is not one whole archive"):
        read_all(good[:1024] + END + b"more")


def test_unknown_types_are_refused_by_the_applier_and_their_data_skipped(tmp_path) -> None:
    data = block(b"vol", b"V", 600) + pax.padded(b"v" * 600) + END
    assert [(m.name, m.type, d) for m, d in read_all(data)] == [("vol", b"V", b"")]
    with pytest.raises(UnsafeArchiveError, match=r"its type b'V' is not one peagent applies"):
        apply_tar(Pipe(data), tmp_path)
    assert listing(tmp_path) == {}
