"""peagent.files.tree: a directory tree as a pax tar stream, checked by extracting it with GNU tar.

The helpers here (a rich tree, a digest of a tree, GNU tar extraction) serve test_layers.py too.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from peagent.cli import main
from peagent.errors import DeviceError
from peagent.files.tree import CAPTURE_LINUX, Exclusions, TreeReport, write_tree
from peagent.image.format import FrameKind, decode_frames, parse_manifest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (device nodes, owners, trusted.* xattrs)")
OLD = 1_600_000_000_123_456_789  # an mtime with nanoseconds, set on every entry of a made tree


def acl_xattr(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


NO_ID = 0xFFFFFFFF
ACL = acl_xattr((1, 7, NO_ID), (2, 5, 1000), (4, 5, NO_ID), (0x10, 5, NO_ID), (0x20, 5, NO_ID))
ACL_TEXT = b"user::rwx,user:1000:r-x,group::r-x,mask::r-x,other::r-x"


def make_tree(root: Path) -> Path:
    """Every kind of entry the writer handles, with owners, modes, xattrs and ACLs; all mtimes OLD."""
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("golden\n")
    (root / "etc" / "empty").touch()
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(os.urandom(1 << 20) + b"tail" * 1000)  # more than one 1 MiB piece
    os.link(root / "bin" / "tool", root / "bin" / "tool2")
    os.link(root / "bin" / "tool", root / "etc" / "tool3")
    os.chmod(root / "bin" / "tool", 0o4755)  # setuid
    (root / "shared").mkdir(mode=0o777)
    os.chmod(root / "shared", 0o3777)  # setgid and sticky
    os.symlink("../etc/hostname", root / "bin" / "rel-link")
    os.symlink("/nowhere/" + "t" * 150, root / "dangling-long-link")
    (root / "dev").mkdir()
    os.mknod(root / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "dev" / "loop0", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    os.mkfifo(root / "dev" / "fifo", 0o600)
    deep = root / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / ("f" * 80)).write_text("a path over 100 bytes")
    (root / "café.txt").write_text("non-ASCII name")
    (root / "home").mkdir()
    (root / "home" / "user").write_text("owned")
    os.chown(root / "home" / "user", 1000, 3_000_000)  # a gid too large for the ustar field
    attrs = root / "attrs"
    attrs.write_bytes(b"x")
    os.setxattr(attrs, "user.comment", b"\xff\x00binary")
    os.setxattr(attrs, "trusted.overlay", b"t")
    os.setxattr(attrs, "security.capability", b"\x01\x00\x00\x02" + bytes(16))
    os.setxattr(attrs, "system.posix_acl_access", ACL)
    os.setxattr(root / "shared", "system.posix_acl_default", ACL)
    with open(root / "sparse", "wb") as f:  # a hole, 8 KiB of data, a hole to the end
        f.seek(3 << 20)
        f.write(b"data" * 2048)
        f.truncate(9 << 20)
    for path in [*root.rglob("*"), root]:
        os.utime(path, ns=(OLD, OLD), follow_symlinks=False)
    return root


def digest(root: Path, *, dir_mtimes: bool = True) -> dict[str, tuple]:
    """path -> (type and mode, uid, gid, size, sha256, link target, device, mtime, xattrs incl. ACLs)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            data = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            is_dir = stat.S_ISDIR(st.st_mode)
            out[str(path.relative_to(root))] = (
                stat.filemode(st.st_mode), st.st_uid, st.st_gid, None if is_dir else st.st_size, data,
                os.readlink(path) if stat.S_ISLNK(st.st_mode) else None,
                st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else None,
                None if is_dir and not dir_mtimes else st.st_mtime_ns,
                {k: os.getxattr(path, k, follow_symlinks=False) for k in sorted(os.listxattr(path, follow_symlinks=False))})
    return out


def link_groups(root: Path) -> set[frozenset[str]]:
    inodes: dict[int, set[str]] = {}
    for path in root.rglob("*"):
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            inodes.setdefault(st.st_ino, set()).add(str(path.relative_to(root)))
    return {frozenset(g) for g in inodes.values()}


def gnu_extract(archive: Path, into: Path, *extra: str) -> None:
    into.mkdir(exist_ok=True)
    subprocess.run(["tar", "--format=pax", "--xattrs", "--xattrs-include=*", "--acls", "-xf", str(archive),
                    "-C", str(into), *extra], check=True, capture_output=True)


def members(archive: bytes | Path) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive if isinstance(archive, bytes) else archive.read_bytes())) as tar:
        return tar.getmembers()


def tree_tar(root: Path, archive: Path, **kwargs) -> TreeReport:
    with archive.open("wb") as f:
        return write_tree(root, f, **kwargs)


class Pipe(io.RawIOBase):
    """An output that cannot seek or tell, like the pipe into the builder."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


@needs_root
def test_gnu_tar_extracts_the_tree_as_it_was(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    report = tree_tar(src, tmp_path / "t.tar")
    data = (1 << 20) + 4000 + 8192 + len("golden\n" "owned" "x" "a path over 100 bytes" "non-ASCII name")
    assert report == TreeReport(files=8, dirs=8, symlinks=2, hardlinks=2, devices=3, bytes=data)
    gnu_extract(tmp_path / "t.tar", tmp_path / "out")
    out = tmp_path / "out"
    assert digest(out) == digest(src)
    assert link_groups(out) == {frozenset({"bin/tool", "bin/tool2", "etc/tool3"})}
    assert os.getxattr(out / "attrs", "system.posix_acl_access") == ACL
    assert os.stat(out / "sparse").st_blocks * 512 <= 64 << 10  # still sparse: 8 KiB of data in 9 MiB


@needs_root
def test_the_records_as_python_tarfile_reads_them(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    pipe = Pipe()
    write_tree(src, pipe)
    found = {m.name: m for m in members(bytes(pipe.data))}
    assert next(iter(found)) == "."  # the root first (written "./")
    attrs = found["attrs"]
    assert attrs.pax_headers["mtime"] == "1600000000.123456789"
    assert attrs.pax_headers["SCHILY.acl.access"] == ACL_TEXT.decode()
    assert not any(k.startswith("SCHILY.xattr.system.") for m in found.values() for k in m.pax_headers)
    assert (attrs.uname, attrs.gname) == ("", "")
    assert found["shared"].pax_headers["SCHILY.acl.default"] == ACL_TEXT.decode()
    assert found["shared"].mode == 0o3777 and found["bin/tool"].mode == 0o4755
    assert found["bin/tool2"].islnk() and found["bin/tool2"].linkname == "bin/tool"
    assert found["home/user"].gid == 3_000_000
    assert found["sparse"].sparse == [(3 << 20, 8192), (9 << 20, 0)] and found["sparse"].size == 9 << 20
    assert (found["dev/loop0"].devmajor, found["dev/loop0"].devminor) == (7, 0)


@needs_root
def test_two_runs_give_the_same_bytes(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    first, second = Pipe(), Pipe()
    write_tree(src, first)
    write_tree(src, second)
    assert first.data == second.data


def fake_root(root: Path) -> Path:
    files = {
        "proc/1/status": "Name: init", "sys/kernel/uevent": "", "run/lock/x": "", "tmp/.X11-unix/X0": "",
        "var/tmp/f": "", "var/cache/apt/archives/vim.deb": "deb", "var/cache/apt/archives/lock": "",
        "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease": "x", "var/log/journal/0123/system.journal": "j",
        "var/log/syslog": "log", "lost+found/#12": "", "etc/machine-id": "0123456789abcdef\n",
        "etc/ssh/ssh_host_ed25519_key": "secret", "etc/ssh/ssh_host_ed25519_key.pub": "pub",
        "etc/ssh/sshd_config": "Port 22", "var/lib/systemd/random-seed": "seed", "swapfile": "swap",
        "usr/bin/ls": "elf",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "var/lib/apt/lists/partial").mkdir()
    (root / "var/lib/dbus").mkdir(parents=True)
    os.symlink("/etc/machine-id", root / "var/lib/dbus/machine-id")
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "etc/machine-id", 0o444)
    return root


def test_capture_linux_leaves_out_runtime_state_and_machine_identity(tmp_path: Path) -> None:
    src = fake_root(tmp_path / "src")
    with (tmp_path / "t.tar").open("wb") as f:
        report = write_tree(src, f, exclusions=CAPTURE_LINUX)
    gnu_extract(tmp_path / "t.tar", tmp_path / "out")
    out = tmp_path / "out"
    kept = {str(p.relative_to(out)) for p in out.rglob("*")}
    for empty_dir in ("proc", "sys", "run", "tmp", "var/tmp", "lost+found", "var/log/journal", "var/lib/apt/lists/partial"):
        assert (out / empty_dir).is_dir() and not any((out / empty_dir).iterdir()), empty_dir
    assert os.stat(out / "tmp").st_mode & 0o7777 == 0o1777
    assert (out / "etc/machine-id").read_bytes() == b"" and os.stat(out / "etc/machine-id").st_mode & 0o777 == 0o444
    gone = {"var/lib/dbus/machine-id", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
            "var/lib/systemd/random-seed", "swapfile", "var/cache/apt/archives/vim.deb",
            "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease"}
    assert not gone & kept
    assert {"etc/ssh/sshd_config", "usr/bin/ls", "var/log/syslog", "var/cache/apt/archives/lock"} <= kept
    # proc, sys, run, tmp, var/tmp, lost+found, journal, the .deb, lists/* (2), dbus's and ssh's ids, seed, swap
    assert report.excluded == 15


def test_exclusions_without_keep_dirs_drop_the_directories(tmp_path: Path) -> None:
    src = fake_root(tmp_path / "src")
    pipe = Pipe()
    report = write_tree(src, pipe, exclusions=Exclusions(("proc", "var/*/apt"), keep_dirs=False))
    names = [m.name for m in members(bytes(pipe.data))]
    assert "proc" not in names and "var/lib" in names and not any("apt" in n for n in names)
    assert report.excluded == 3


@needs_root
def test_other_filesystems_are_not_entered(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "mnt").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(src / "mnt")], check=True)
    try:
        (src / "mnt" / "inside").write_text("another filesystem")
        pipe = Pipe()
        write_tree(src, pipe)
    finally:
        subprocess.run(["umount", str(src / "mnt")], check=True)
    assert [m.name for m in members(bytes(pipe.data))] == [".", "mnt"]  # the mount point only


def image_bytes(image: Path) -> bytes:
    """The image as a reader of its files sees it (holes are zeros)."""
    m = parse_manifest((image / "manifest.json").read_bytes())
    blob = (image / m.blob.url).read_bytes()
    out = bytearray()
    for f in decode_frames((image / m.frames.url).read_bytes(), m):
        start, end = m.frame_extent(f.index)
        out += bytes(end - start) if f.kind == FrameKind.HOLE else \
            zstandard.ZstdDecompressor().decompress(blob[f.offset:f.offset + f.length])
    return bytes(out)


@needs_root
def test_cli_builds_and_verifies_a_file_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = make_tree(tmp_path / "src")
    assert main(["keys", "-o", str(tmp_path / "k")]) == 0
    image = tmp_path / "img"
    assert main(["image", "build", "--files", str(src), "-o", str(image), "--name", "root", "--version", "1",
                 "--key", str(tmp_path / "k" / "peagent.key"), "--frame-size", "65536"]) == 0
    assert main(["image", "verify", str(image), "--key", str(tmp_path / "k" / "peagent.pub")]) == 0
    doc = (image / "manifest.json").read_text()
    assert '"kind": "files"' in doc and '"source": "src"' in doc and '"layer"' not in doc
    (tmp_path / "t.tar").write_bytes(image_bytes(image))
    gnu_extract(tmp_path / "t.tar", tmp_path / "out")
    assert digest(tmp_path / "out") == digest(src)
    for argv, message in ((["--files", str(src), "--kind", "disk"], "--files builds a file image (kind files)"),
                          ([str(src), "--files", str(src)], "give a SOURCE or --files DIR"),
                          ([str(src / "sparse"), "--capture"], "--base-tree and --capture make a file image"),
                          (["--files", str(tmp_path / "nothing")], "cannot read the tree"),
                          (["--files", str(tmp_path)], "is inside the tree")):
        assert main(["image", "build", *argv, "-o", str(tmp_path / "bad"), "--name", "x", "--version", "1"]) == 2
        assert message in caplog.text


def test_a_tree_that_fails_midway_fails_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peagent.files import tree
    from peagent.image.build import BuildOptions, build_from
    from peagent.image.sources import TreeSource

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(os.urandom(300_000))

    def broken(root: Path, out: io.RawIOBase, **kwargs) -> TreeReport:
        out.write(b"x" * 100_000)  # some of a stream, then an I/O error, as from a failing disk
        raise OSError(5, "Input/output error", str(root / "f"))

    monkeypatch.setattr(tree, "write_tree", broken)
    with pytest.raises(DeviceError, match=r"reading the tree failed: \[Errno 5\] Input/output error: .*/src/f"):
        build_from(TreeSource(str(tmp_path / "src")), str(tmp_path / "img"), BuildOptions(name="x", version="1"))
    assert not (tmp_path / "img" / "manifest.json").exists()
