"""apply_tar: archives that try to get out of the target are refused and leave nothing outside it;
archives that do not are applied with their owners, modes, times, links, xattrs, ACLs and holes.

Every test that refuses an archive checks the `outside` directory next to the target: a refusal
that came after a write outside would still be an escape."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from peagent.errors import DeviceError, ImageError, UnsafeArchiveError
from peagent.files import acl
from peagent.files.extract import ApplyReport, Limits, apply_tar
from tests.unit.files.tarcraft import MTIME, Pipe, archive, directory, entry, file, hardlink, listing, symlink, \
    tree_digest

CAP_NET_RAW = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12  # vfs_cap_data v2, effective, cap_net_raw


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
    with pytest.raises(UnsafeArchiveError, match="'.wh.foo': it is an OCI whiteout, which only a layer may carry"):
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
    a, b = tarfile.open(fileobj=io.BytesIO(good)).getmembers()
    with pytest.raises(ImageError, match="not a tar stream"):
        apply(b"", target)
    with pytest.raises(ImageError, match="'a': the stream is damaged or cut short: unexpected end of data"):
        apply(good[:a.offset_data + 100], target)
    with pytest.raises(ImageError, match="ends without the end-of-archive marker: it is truncated, at byte 2048, "
                                         "after the entry 'b'"):
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


# --- fidelity --------------------------------------------------------------------------------------


def test_modes_owners_and_times(target) -> None:
    ns = "1700000000.123456789"
    report = apply(archive(
        directory("bin", mode=0o755),
        file("bin/su", b"su", mode=0o4755),
        file("bin/wall", b"wall", mode=0o2755, gid=5),
        directory("tmp", mode=0o1777),
        directory("home/u", mode=0o700, uid=1000, gid=1000, pax={"mtime": ns}),
        file("home/u/f", b"data", mode=0o640, uid=1000, gid=1001, pax={"mtime": ns, "atime": "1600000000.5"}),
    ), target)
    assert (report.files, report.dirs, report.bytes) == (3, 3, 10)

    def check(rel: str, mode: int, uid: int = 0, gid: int = 0, mtime_ns: int = MTIME * 10**9) -> None:
        st = (target / rel).lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (mode, uid, gid, mtime_ns), rel

    check("bin/su", 0o4755)
    check("bin/wall", 0o2755, gid=5)
    check("tmp", 0o1777)
    check("bin", 0o755)  # its files were written after its entry: the mtime stuck all the same
    check("home/u", 0o700, 1000, 1000, 1_700_000_000_123_456_789)
    check("home/u/f", 0o640, 1000, 1001, 1_700_000_000_123_456_789)
    assert (target / "home/u/f").lstat().st_atime_ns == 1_600_000_000_500_000_000
    home = (target / "home").lstat()  # not in the archive: made as tar makes it
    assert (stat.S_IMODE(home.st_mode), home.st_uid) == (0o755, 0)


def test_symlinks_and_hard_links(target) -> None:
    report = apply(archive(file("a", b"data", uid=3), hardlink("b", "a"), symlink("lib", "usr/lib", uid=5, gid=6),
                           symlink("abs", "/etc/passwd"), hardlink("a", "a")), target)
    assert (report.files, report.hardlinks, report.symlinks) == (1, 2, 2)
    a, b = (target / "a").stat(), (target / "b").stat()
    assert (a.st_ino, a.st_nlink, b.st_uid) == (b.st_ino, 2, 3)
    assert os.readlink(target / "lib") == "usr/lib" and os.readlink(target / "abs") == "/etc/passwd"
    st = (target / "lib").lstat()
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (5, 6, MTIME * 10**9)


def make_sparse(path: Path) -> bytes:
    with path.open("wb") as f:
        f.truncate(32 << 20)
        for offset in (0, 1 << 20, 20 << 20):
            f.seek(offset)
            f.write(os.urandom(5000))
        f.seek((32 << 20) - 10)
        f.write(b"end of it!")
    return path.read_bytes()


@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_sparse_files_stay_sparse(target, tmp_path, fmt) -> None:
    src = tmp_path / "src"
    src.mkdir()
    content = make_sparse(src / "disk.img")
    tar = subprocess.run(["tar", f"--format={fmt}", "--sparse", "-cf", "-", "-C", str(src), "disk.img"],
                         check=True, capture_output=True).stdout
    report = apply(tar, target)
    out = target / "disk.img"
    assert out.stat().st_size == 32 << 20 and out.stat().st_blocks * 512 <= 64 << 10
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(content).digest()
    assert report.bytes < 64 << 10


def test_zeros_in_a_file_that_was_not_sparse_are_written(target) -> None:
    apply(archive(file("swapfile", bytes(1 << 20), mode=0o600)), target)  # swapon refuses a file with holes
    assert (target / "swapfile").stat().st_blocks * 512 >= 1 << 20


def test_xattrs_survive_chown(target) -> None:
    apply(archive(file("ping", b"elf", uid=1000, mode=0o755, pax={
        "SCHILY.xattr.user.mime": "application/x-elf",
        "SCHILY.xattr.trusted.overlay": "y",
        "SCHILY.xattr.security.capability": CAP_NET_RAW,
        "RHT.security.selinux": "system_u:object_r:ping_exec_t:s0",
    }), symlink("l", "ping", pax={"SCHILY.xattr.security.selinux": "system_u:object_r:bin_t:s0\x00"})), target)
    ping = target / "ping"
    assert os.getxattr(ping, "user.mime") == b"application/x-elf"
    assert os.getxattr(ping, "trusted.overlay") == b"y"
    assert os.getxattr(ping, "security.capability") == CAP_NET_RAW.encode()
    assert os.getxattr(ping, "security.selinux") == b"system_u:object_r:ping_exec_t:s0\0"
    assert os.getxattr(target / "l", "security.selinux", follow_symlinks=False) == b"system_u:object_r:bin_t:s0\0"


def acl_text(path: Path, name: str) -> str:
    """The ACL as getfacl shows it when getfacl is there, else decoded from the xattr ourselves."""
    if shutil.which("getfacl"):
        flag = ["--default"] if name == acl.DEFAULT else ["--access"]
        out = subprocess.run(["getfacl", "--numeric", "--omit-header", "--absolute-names", *flag, str(path)],
                             check=True, capture_output=True, text=True).stdout
        return ",".join(line.split("\t")[0].removeprefix("default:") for line in out.split("\n") if line)
    return acl.decode(os.getxattr(path, name))


def test_acls(target) -> None:
    access = "user::rwx,user:1000:r-x,group::r-x,mask::r-x,other::---"
    default = "user::rwx,group::r-x,group:50:rwx,mask::rwx,other::---"
    apply(archive(directory("shared", mode=0o750, pax={"SCHILY.acl.default": default}),
                  file("shared/f", b"x", mode=0o750, pax={"SCHILY.acl.access": access.replace(",", "\n")})), target)
    assert acl_text(target / "shared/f", acl.ACCESS) == access
    assert acl_text(target / "shared", acl.DEFAULT) == default
    assert stat.S_IMODE((target / "shared/f").stat().st_mode) == 0o750


@pytest.mark.parametrize("compression", ["gz", "xz", "bz2", "zst"])
def test_compressed_streams(target, compression) -> None:
    plain = archive(directory("d"), file("d/f", b"content" * 1000))
    data = zstandard.ZstdCompressor().compress(plain) if compression == "zst" else \
        gzip.compress(plain) if compression == "gz" else archive(directory("d"), file("d/f", b"content" * 1000),
                                                                 compression=compression)
    calls: list[int] = []
    report = apply(data, target, progress=calls.append)
    assert listing(target) == {"d": "dir", "d/f": "content" * 1000}
    assert sum(calls) == report.bytes == 7000


def test_round_trip_through_gnu_tar(target, tmp_path) -> None:
    src = tmp_path / "src"
    (src / "etc/ssl/private").mkdir(parents=True)
    (src / "etc/passwd").write_text("root:x:0:0\n")
    (src / "etc/ssl/private/key").write_bytes(os.urandom(3000))
    os.chmod(src / "etc/ssl/private", 0o700)
    os.chown(src / "etc/ssl/private/key", 0, 101)
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/sudo").write_bytes(b"\x7fELF" + os.urandom(100))
    os.chmod(src / "usr/bin/sudo", 0o4755)
    (src / "usr/bin/ping").write_bytes(b"\x7fELF ping")
    os.setxattr(src / "usr/bin/ping", "security.capability", CAP_NET_RAW.encode())
    os.setxattr(src / "usr/bin/ping", "user.binary", b"\xff\x00\x01\x80")
    os.link(src / "usr/bin/sudo", src / "usr/bin/sudoedit")
    (src / "lib").symlink_to("usr/lib")
    os.lchown(src / "lib", 12, 34)
    (src / "home/u").mkdir(parents=True)
    os.chown(src / "home/u", 1000, 1000)
    (src / "home/u/notes").write_text("acl'd")
    os.setxattr(src / "home/u/notes", acl.ACCESS, acl.encode("user::rw-,user:1001:r--,group::r--,mask::r--,other::---"))
    os.setxattr(src / "home/u", acl.DEFAULT, acl.encode("user::rwx,group::---,group:1002:r-x,mask::r-x,other::---"))
    (src / "tmp").mkdir(mode=0o1777)
    os.chmod(src / "tmp", 0o1777)
    (src / "empty").mkdir()
    os.mkfifo(src / "run.fifo")
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    make_sparse(src / "disk.img")
    for i, path in enumerate(sorted(src.rglob("*"), reverse=True)):  # children first: the parents' times stick
        os.utime(path, ns=(MTIME * 10**9 + i, MTIME * 10**9 + i * 1001), follow_symlinks=False)
    os.utime(src, ns=(MTIME * 10**9, MTIME * 10**9 + 7))
    tar = subprocess.run(["tar", "--format=pax", "--xattrs", "--acls", "--sparse", "-cf", "-", "-C", str(src), "."],
                         check=True, capture_output=True).stdout
    apply(tar, target, allow_devices=True)
    assert tree_digest(target) == tree_digest(src)
    assert (target / "disk.img").stat().st_blocks * 512 <= 64 << 10


def test_entries_go_in_whatever_order(target) -> None:
    """A file before its directory's entry (some writers do that), a name given twice."""
    apply(archive(file("a/b/c", b"1"), directory("a/b", mode=0o711, uid=9), file("a/b/c", b"2")), target)
    assert listing(target) == {"a": "dir", "a/b": "dir", "a/b/c": "2"}
    st = (target / "a/b").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime_ns) == (0o711, 9, MTIME * 10**9)


def test_the_target_must_exist(tmp_path) -> None:
    with pytest.raises(DeviceError, match="the target directory .*/missing cannot be opened: No such file"):
        apply(archive(file("a")), tmp_path / "missing")
