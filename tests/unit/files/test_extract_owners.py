"""apply_tar leaves out the chown and chmod of a new file when the file was made with that owner
and mode already, and only then: the umask, a set-group-ID directory, a directory of another
owner or a default ACL each bring the calls back."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from peagent.files import acl
from peagent.files.extract import apply_tar
from tests.unit.files.tarcraft import Pipe, archive, directory, file


@pytest.fixture
def target(tmp_path: Path) -> Path:
    root = tmp_path / "target"
    root.mkdir()
    return root


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    made: list[str] = []
    for name in ("fchown", "fchmod"):
        real = getattr(os, name)

        def counted(fd: int, *args: int, _real=real, _name=name) -> None:
            made.append(_name)
            _real(fd, *args)

        monkeypatch.setattr(os, name, counted)
    return made


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def mode_and_owner(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_a_plain_tree_needs_neither(target, calls, umask) -> None:
    apply_tar(Pipe(archive(file("a", b"1"), file("b", b"22", mode=0o755), file("c", b"", mode=0o600))), target)
    assert calls == []
    assert [mode_and_owner(target / n) for n in "abc"] == [(0o644, 0, 0), (0o755, 0, 0), (0o600, 0, 0)]


def test_the_umask_never_takes_bits_away(target, calls, umask) -> None:
    umask(0o077)
    apply_tar(Pipe(archive(file("a", b"1", mode=0o644), file("w", b"2", mode=0o666))), target)
    assert mode_and_owner(target / "a")[0] == 0o644 and mode_and_owner(target / "w")[0] == 0o666
    assert calls == ["fchmod", "fchmod"]


def test_set_id_bits_follow_the_owner(target, calls, umask) -> None:
    apply_tar(Pipe(archive(file("su", b"x", mode=0o4755), file("wall", b"y", mode=0o2755, gid=5))), target)
    assert mode_and_owner(target / "su") == (0o4755, 0, 0)
    assert mode_and_owner(target / "wall") == (0o2755, 0, 5)
    assert calls == ["fchmod", "fchown", "fchmod"]


def test_a_set_group_id_directory_of_another_group(target, calls, umask) -> None:
    """A file made there takes the directory's group; the archive's group must still win."""
    (target / "shared").mkdir()
    os.chown(target / "shared", 0, 50)
    os.chmod(target / "shared", 0o2775)
    apply_tar(Pipe(archive(file("shared/root", b"r"), file("shared/staff", b"s", gid=50))), target)
    assert mode_and_owner(target / "shared/root") == (0o644, 0, 0)
    assert mode_and_owner(target / "shared/staff") == (0o644, 0, 50)


def test_a_directory_of_another_owner_and_a_later_directory_entry(target, calls, umask) -> None:
    (target / "home").mkdir()
    os.chown(target / "home", 1000, 1000)
    apply_tar(Pipe(archive(file("home/f", b"1"), directory("etc"), file("etc/g", b"2", uid=7, gid=8),
                           file("etc/h", b"3"))), target)
    assert mode_and_owner(target / "home/f") == (0o644, 0, 0)
    assert mode_and_owner(target / "etc/g") == (0o644, 7, 8)
    assert mode_and_owner(target / "etc/h") == (0o644, 0, 0)


def test_a_default_acl_decides_nothing(target, calls, umask) -> None:
    (target / "acl").mkdir()
    os.setxattr(target / "acl", acl.DEFAULT, acl.encode("user::rwx,group::rwx,other::rwx"))
    apply_tar(Pipe(archive(file("acl/f", b"1", mode=0o640))), target)
    assert mode_and_owner(target / "acl/f")[0] == 0o640
    assert acl.ACCESS not in os.listxattr(target / "acl/f")
    assert "fchmod" in calls
