"""apply_tar refuses what an archive must not do: names out of the target, writes through symlinks,
hard links out, devices it may not make, whiteouts in a base, more than the limits, damaged or cut
streams. (What it keeps of an archive that is fine: test_extract_fidelity; layers:
test_extract_layers.)

Every test that refuses an archive checks the `outside` directory next to the target: a refusal
that came after a write outside would still be an escape."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from peagent.errors import DeviceError, ImageError, UnsafeArchiveError
from peagent.files.extract import ApplyReport, Limits, apply_tar
from tests.unit.files.tarcraft import (
    Pipe,
    archive,
    directory,
    entry,
    file,
    hardlink,
    listing,
    symlink,
)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("outside")
    root = tmp_path / "target"
    root.mkdir()
    return root


def outside_of(root: Path) -> dict[str, str]:
    return listing(root.parent / "outside")


UNTOUCHED = {"secret": "outside"}


def apply(data: bytes, root: Path, **kw) -> ApplyReport:
    return apply_tar(Pipe(data), root, **kw)


# --- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "problem"), [
    ("{outside}/pwned", "is an absolute path"),
    ("../outside/pwned", "has a '..' component"),
    ("a/../../outside/pwned", "has a '..' component"),
    ("", "its name is empty"),
])
def test_names_that_leave_the_target_are_refused(target, name, problem) -> None:
    name = name.format(outside=target.parent / "outside")
    with pytest.raises(UnsafeArchiveError, match=problem) as caught:
        apply(archive(file("ok", b"1"), file(name, b"x")), target)
    assert f"tar entry {name!r}" in str(caught.value) and f"nothing was written outside {target}" in str(caught.value)
    assert caught.value.code == "image.unsafe"
    assert outside_of(target) == UNTOUCHED
    assert listing(target) == {"ok": "1"}  # applied before the refusal, inside


def test_a_nul_in_a_name_is_refused(target) -> None:
    with pytest.raises(UnsafeArchiveError, match="holds a NUL byte"):
        apply(archive(file("x", b"", pax={"path": "a\x00b"})), target)


@pytest.mark.parametrize("link", ["{outside}", "../outside"])
def test_a_symlink_out_then_an_entry_through_it_is_refused(target, link) -> None:
    data = archive(symlink("esc", link.format(outside=target.parent / "outside")), file("esc/pwned", b"x"))
    with pytest.raises(UnsafeArchiveError, match="'esc/pwned': 'esc' in the target is a symlink"):
        apply(data, target)
    assert outside_of(target) == UNTOUCHED
    assert (target / "esc").is_symlink()


def test_a_symlink_already_in_the_target_is_not_written_through(target) -> None:
    (target / "etc").symlink_to(target.parent / "outside")
    for entry_ in (file("etc/passwd", b"x"), directory("etc/sub"), symlink("etc/l", "/"), file("etc/.wh.secret")):
        with pytest.raises(UnsafeArchiveError, match="'etc' in the target is a symlink"):
            apply(archive(entry_), target, layer=True)
    assert outside_of(target) == UNTOUCHED


def test_a_directory_entry_replaces_a_symlink_instead_of_following_it(target) -> None:
    data = archive(symlink("d", str(target.parent / "outside")), directory("d"), file("d/x", b"in"))
    apply(data, target)
    assert listing(target) == {"d": "dir", "d/x": "in"}
    assert outside_of(target) == UNTOUCHED


def test_a_file_entry_replaces_a_symlink_instead_of_writing_through_it(target) -> None:
    (target / "f").symlink_to(target.parent / "outside" / "secret")
    apply(archive(file("f", b"mine")), target)
    assert listing(target) == {"f": "mine"}
    assert outside_of(target) == UNTOUCHED


@pytest.mark.parametrize(("links", "problem"), [
    ([("h", "../outside/secret")], "its hard link target '../outside/secret' has a '..' component"),
    ([("h", "{outside}/secret")], "is an absolute path"),
    ([("s", "-> {outside}/secret"), ("h", "s")], "a hard link to 's', which is a symlink"),
    ([("s", "-> {outside}"), ("h", "s/secret")], "'s' in the target is a symlink"),
    ([("h", "missing")], "a hard link to 'missing', which is not in the target"),
])
def test_hard_links_only_to_what_is_in_the_target_and_not_a_symlink(target, links, problem) -> None:
    entries = []
    for name, to in links:
        to = to.format(outside=target.parent / "outside")
        entries.append(symlink(name, to[3:]) if to.startswith("-> ") else hardlink(name, to))
    with pytest.raises(UnsafeArchiveError, match=problem):
        apply(archive(*entries), target)
    assert outside_of(target) == UNTOUCHED
    assert (target.parent / "outside" / "secret").stat().st_nlink == 1
    assert not (target / "h").exists()


@pytest.mark.parametrize(("kind", "what"), [(tarfile.CHRTYPE, "a device node"), (tarfile.BLKTYPE, "a device node"),
                                            (tarfile.FIFOTYPE, "a FIFO")])
def test_device_nodes_and_fifos_only_when_allowed(target, kind, what) -> None:
    data = archive(entry("dev/n", kind, major=1, minor=3, mode=0o666, uid=7))
    with pytest.raises(UnsafeArchiveError, match=f"it is {what}, and devices are not allowed"):
        apply(data, target)
    assert not (target / "dev" / "n").exists()
    report = apply(data, target, allow_devices=True)
    st = (target / "dev" / "n").lstat()
    assert report.devices == 1 and st.st_uid == 7 and stat.S_IMODE(st.st_mode) == 0o666
    if kind == tarfile.FIFOTYPE:
        assert stat.S_ISFIFO(st.st_mode)
    else:
        assert (stat.S_ISCHR(st.st_mode) if kind == tarfile.CHRTYPE else stat.S_ISBLK(st.st_mode))
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)


def test_a_whiteout_in_a_base_image_is_refused(target) -> None:
    (target / "foo").write_text("kept")
    with pytest.raises(UnsafeArchiveError, match=r"'\.wh\.foo': it is an OCI whiteout, which only a layer may carry"):
        apply(archive(file(".wh.foo")), target)
    assert listing(target) == {"foo": "kept"}


def test_a_decompression_bomb_stops_at_max_bytes(target) -> None:
    bomb = archive(file("small", b"s" * 1000), file("zeros", bytes(8 << 20)), compression="gz")
    assert len(bomb) < 64 << 10
    with pytest.raises(UnsafeArchiveError, match=r"'zeros': its 8388608 bytes of data would take the archive past "
                                                 r"max_bytes \(1048576\), after 1000: a decompression bomb"):
        apply(bomb, target, limits=Limits(max_bytes=1 << 20))
    assert listing(target) == {"small": "s" * 1000}
    assert outside_of(target) == UNTOUCHED


def test_too_many_entries(target) -> None:
    data = archive(*(file(f"f{i}", b"x") for i in range(5)))
    with pytest.raises(UnsafeArchiveError, match=r"'f3': the archive has more than max_entries \(3\) entries"):
        apply(data, target, limits=Limits(max_entries=3))
    assert sorted(listing(target)) == ["f0", "f1", "f2"]


def test_names_over_max_name(target) -> None:
    with pytest.raises(UnsafeArchiveError, match=r"its name is 61 bytes long, over max_name \(60\)"):
        apply(archive(file("d/" + "x" * 59)), target, limits=Limits(max_name=60))
    with pytest.raises(UnsafeArchiveError, match="a component longer than 255 bytes"):
        apply(archive(file("y" * 256)), target)


def test_pax_headers_over_the_limit_are_refused_before_they_are_read(target) -> None:
    big = archive(file("big", b"", pax={"SCHILY.xattr.user.big": "a" * (2 << 20)}))
    with pytest.raises(UnsafeArchiveError, match=r"take more than max_pax_header \(1048576 bytes\)"):
        apply(big, target)
    # A pax header that declares 4 GiB (and is not there): refused from its size, nothing is read.
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 4 << 30
    with pytest.raises(UnsafeArchiveError, match="headers of the tar entry at byte 0 of the stream"):
        apply(header.tobuf(tarfile.USTAR_FORMAT), target)
    assert listing(target) == {}


def test_damaged_and_truncated_streams_are_errors_not_endings(target) -> None:
    good = archive(file("a", b"A" * 600), file("b", b"B"))
    with tarfile.open(fileobj=io.BytesIO(good)) as tar:
        a, b = tar.getmembers()
    with pytest.raises(ImageError, match="not a tar stream"):
        apply(b"", target)
    with pytest.raises(ImageError, match="'a': the stream is damaged or cut short: unexpected end of data"):
        apply(good[:a.offset_data + 100], target)
    with pytest.raises(ImageError, match="ends without the end-of-archive marker: it is truncated, at byte "
                                         f"{b.offset_data + 512}, after the entry 'b'"):
        apply(good[:b.offset_data + 512], target)
    damaged = bytearray(good)
    damaged[b.offset + 148] ^= 0x01  # b's header checksum
    with pytest.raises(ImageError, match=f"has a damaged header .*, at byte {b.offset}, after the entry 'a'"):
        apply(bytes(damaged), target)


def test_an_error_of_the_stream_itself_passes_through(target) -> None:
    class Broken:
        def __init__(self) -> None:
            self.data = io.BytesIO(archive(file("a", b"x" * 100_000)))

        def read(self, size: int = -1) -> bytes:
            if self.data.tell() > 50_000:
                raise ConnectionResetError("reset by peer")
            return self.data.read(min(size, 10_000))

    with pytest.raises(ConnectionResetError, match="reset by peer"):
        apply_tar(Broken(), target)


def test_acl_names_are_refused_not_looked_up(target) -> None:
    with pytest.raises(UnsafeArchiveError, match="names user 'alice' without a numeric id"):
        apply(archive(file("f", pax={"SCHILY.acl.access": "user::rw-\nuser:alice:r--\ngroup::r--\nmask::r--\n"
                                                         "other::---\n"})), target)


def test_the_target_must_exist(tmp_path) -> None:
    with pytest.raises(DeviceError, match=r"the target directory .*/missing cannot be opened: No such file"):
        apply(archive(file("a")), tmp_path / "missing")
