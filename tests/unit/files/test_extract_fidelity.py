"""apply_tar keeps what a tree needs: owners, modes with setuid bits, nanosecond times, symlinks,
hard links, holes, xattrs (capabilities surviving chown), ACLs; and a tree archived by GNU tar
comes out the same tree."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import zstandard

from peagent.files import acl
from peagent.files.extract import apply_tar
from tests.unit.files.tarcraft import (
    MTIME,
    Pipe,
    archive,
    directory,
    file,
    hardlink,
    listing,
    symlink,
    tree_digest,
)

CAP_NET_RAW = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12  # vfs_cap_data v2, effective, cap_net_raw


@pytest.fixture
def target(tmp_path: Path) -> Path:
    root = tmp_path / "target"
    root.mkdir()
    return root


def apply(data: bytes, root: Path, **kw):
    return apply_tar(Pipe(data), root, **kw)


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


def test_zeros_inside_the_data_of_a_sparse_member_become_holes(target) -> None:
    """GNU sparse 0.1, crafted: one extent of 64 KiB that is mostly zeros, in a 1 MiB file."""
    stored = b"x" * 4096 + bytes(56 << 10) + b"y" * 4096
    data = archive(file("s", stored, pax={"GNU.sparse.size": str(1 << 20), "GNU.sparse.map": f"4096,{len(stored)}"}))
    apply(data, target)
    out = target / "s"
    assert out.read_bytes() == bytes(4096) + stored + bytes((1 << 20) - 4096 - len(stored))
    assert out.stat().st_blocks * 512 <= 16 << 10


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
