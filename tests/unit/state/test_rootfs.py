"""Confined reads and atomic writes inside a root tree: symlinks resolved as in a chroot, never out of it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from peagent.state import rootfs
from peagent.state.rootfs import RootfsError


def write(root: Path, rel: str, data: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def test_absolute_symlink_is_taken_relative_to_root(tree: Path) -> None:
    write(tree, "usr/lib/os-release", "ID=debian\n")
    os.symlink("/usr/lib/os-release", tree / "etc-os-release")
    (tree / "etc").mkdir()
    os.symlink("../usr/lib/os-release", tree / "etc/os-release")
    assert rootfs.read_text(tree, "etc-os-release") == "ID=debian\n"
    assert rootfs.read_text(tree, "etc/os-release") == "ID=debian\n"
    assert rootfs.resolve(tree, "etc/os-release") == tree / "usr/lib/os-release"


def test_symlinked_directories_on_the_way(tree: Path) -> None:
    write(tree, "usr/sbin/sshd", "#!")
    os.symlink("usr/sbin", tree / "sbin")
    assert rootfs.kind(tree, "sbin/sshd") == "file"
    assert rootfs.resolve(tree, "sbin/sshd") == tree / "usr/sbin/sshd"
    assert rootfs.kind(tree, "sbin", follow_last=False) == "link"
    assert rootfs.kind(tree, "sbin") == "dir"


def test_a_host_file_is_never_read_through_an_absolute_link(tree: Path, tmp_path: Path) -> None:
    outside = write(tmp_path, "secret.txt", "host secret")
    os.symlink(str(outside), tree / "link")  # absolute: means <root>/<that path>, which is not there
    assert rootfs.read_text(tree, "link") is None


def test_dotdot_above_root_is_refused(tree: Path, tmp_path: Path) -> None:
    write(tmp_path, "secret.txt", "host secret")
    (tree / "etc").mkdir()
    os.symlink("../../secret.txt", tree / "etc/evil")
    with pytest.raises(RootfsError, match="above the root"):
        rootfs.resolve(tree, "etc/evil")
    notes: list[str] = []
    assert rootfs.read_text(tree, "etc/evil", notes=notes) is None
    assert len(notes) == 1 and "etc/evil" in notes[0] and "above the root" in notes[0]
    with pytest.raises(RootfsError):
        rootfs.resolve(tree, "../x")


def test_symlink_loop_is_refused(tree: Path) -> None:
    os.symlink("b", tree / "a")
    os.symlink("a", tree / "b")
    with pytest.raises(RootfsError, match="more than 20 symlinks"):
        rootfs.resolve(tree, "a")
    assert rootfs.read_text(tree, "a") is None
    assert rootfs.kind(tree, "a") is None


def test_size_limit_and_non_regular_files(tree: Path) -> None:
    write(tree, "big", b"x" * 101)
    write(tree, "small", b"x" * 100)
    notes: list[str] = []
    assert rootfs.read_bytes(tree, "big", 100, notes) is None
    assert notes == ["big: 101 bytes, more than the 100 a file of its kind may be; ignored"]
    assert rootfs.read_bytes(tree, "small", 100) == b"x" * 100
    os.mkfifo(tree / "fifo")
    notes.clear()
    assert rootfs.read_bytes(tree, "fifo", notes=notes) is None  # and does not block
    assert notes == ["fifo: not a regular file; ignored"]
    (tree / "dir").mkdir()
    assert rootfs.read_bytes(tree, "dir") is None
    assert rootfs.read_bytes(tree, "missing") is None


def test_config_limit_is_one_mib(tree: Path) -> None:
    write(tree, "etc/huge.conf", b"a" * (rootfs.CONFIG_LIMIT + 1))
    notes: list[str] = []
    assert rootfs.read_text(tree, "etc/huge.conf", notes=notes) is None
    assert "1048576" in notes[0]


def test_list_dir_and_readlink(tree: Path) -> None:
    write(tree, "d/b", "")
    write(tree, "d/a", "")
    os.symlink("d", tree / "l")
    os.symlink("/usr/share/zoneinfo/Europe/Berlin", tree / "localtime")
    assert rootfs.list_dir(tree, "l") == ["a", "b"]
    assert rootfs.list_dir(tree, "nothing") == []
    assert rootfs.list_dir(tree, "d/a") == []
    assert rootfs.readlink(tree, "localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    assert rootfs.readlink(tree, "d/a") is None


def test_write_file_creates_parents_and_sets_mode(tree: Path) -> None:
    path = rootfs.write_file(tree, "var/lib/peagent/firstboot.env", b"A='b'\n", 0o600)
    assert path == tree / "var/lib/peagent/firstboot.env"
    assert path.read_bytes() == b"A='b'\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tree / "var/lib/peagent").stat().st_mode) == 0o755
    assert sorted(os.listdir(tree / "var/lib/peagent")) == ["firstboot.env"]  # no temporary left


def test_write_file_replaces_atomically_keeping_owner_and_mode(tree: Path) -> None:
    shadow = write(tree, "etc/shadow", "root:*:1::::::\n")
    os.chmod(shadow, 0o640)
    os.chown(shadow, 0, 42)
    rootfs.write_file(tree, "etc/shadow", b"root:$6$x:1::::::\n", None)
    st = (tree / "etc/shadow").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, 42)
    assert (tree / "etc/shadow").read_text() == "root:$6$x:1::::::\n"


def test_write_file_through_a_symlinked_parent_stays_inside(tree: Path, tmp_path: Path) -> None:
    (tree / "usr/lib").mkdir(parents=True)
    os.symlink("/usr/lib", tree / "lib")  # absolute: the tree's usr/lib, not the host's
    rootfs.write_file(tree, "lib/peagent/x", b"1")
    assert (tree / "usr/lib/peagent/x").read_bytes() == b"1"
    os.symlink(str(tmp_path), tree / "out")  # the host's tmp_path, were it followed: becomes <root>/<tmp_path>
    rootfs.write_file(tree, "out/y", b"2")
    assert not (tmp_path / "y").exists()
    assert (tree / str(tmp_path).lstrip("/") / "y").read_bytes() == b"2"
    os.symlink("../..", tree / "up")
    with pytest.raises(RootfsError):
        rootfs.write_file(tree, "up/z", b"3")
    assert not (tmp_path / "z").exists()


def test_write_file_replaces_a_symlink_itself(tree: Path, tmp_path: Path) -> None:
    write(tree, "usr/lib/os-release", "ID=x\n")
    os.symlink("../usr/lib/os-release", tree / "etc-link")
    rootfs.write_file(tree, "etc-link", b"new\n")
    assert (tree / "usr/lib/os-release").read_text() == "ID=x\n"
    assert not (tree / "etc-link").is_symlink() and (tree / "etc-link").read_text() == "new\n"


def test_symlink_and_remove(tree: Path) -> None:
    write(tree, "etc/localtime", "old copy")
    rootfs.symlink(tree, "etc/localtime", "/usr/share/zoneinfo/UTC")
    assert os.readlink(tree / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    assert rootfs.remove(tree, "etc/localtime") is True  # the link, not its (absent) target
    assert not os.path.lexists(tree / "etc/localtime")
    assert rootfs.remove(tree, "etc/localtime") is False
    write(tree, "var/lib/cloud/instances/i-1/x", "")
    target = write(tree, "keep/me", "")
    os.symlink("/keep", tree / "var/lib/cloud/instances/i-1/link")
    assert rootfs.remove(tree, "var/lib/cloud/instances") is True
    assert not (tree / "var/lib/cloud/instances").exists() and target.exists()
    with pytest.raises(RootfsError):
        rootfs.remove(tree, "")


def test_mode_of(tree: Path) -> None:
    os.chmod(write(tree, "f", ""), 0o640)
    assert rootfs.mode_of(tree, "f") == 0o640
    assert rootfs.mode_of(tree, "g") is None
