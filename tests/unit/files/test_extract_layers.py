"""apply_tar with layer=True: OCI whiteouts and opaque directories over a base, and what an entry
does to whatever is already at its path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from peagent.errors import UnsafeArchiveError
from peagent.files import acl
from peagent.files.extract import apply_tar
from tests.unit.files.tarcraft import Pipe, archive, directory, file, hardlink, listing, symlink

BASE = archive(
    directory("etc"), file("etc/a", b"A"), file("etc/b", b"B"),
    directory("opt"), file("opt/keep", b"K"), directory("opt/sub"), file("opt/sub/x", b"X"),
    directory("var"), file("var/log", b"L"),
    directory("gone"), file("gone/y", b"Y"), symlink("gone/l", "/etc"),
)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "target"
    root.mkdir()
    apply_tar(Pipe(BASE), root)
    return root


def test_base_then_layer_gives_exactly_the_tree(base) -> None:
    report = apply_tar(Pipe(archive(
        directory("etc"), file("etc/.wh.a"),
        file(".wh.gone"),  # a directory, with all it holds
        directory("opt"), file("opt/.wh..wh..opq"), file("opt/new", b"N"),
        file("var/log", b"L2"),
        file("etc/.wh.never-there"), file("nowhere/.wh.x"),  # nothing to delete: fine
    )), base, layer=True)
    assert listing(base) == {"etc": "dir", "etc/b": "B", "opt": "dir", "opt/new": "N", "var": "dir", "var/log": "L2"}
    assert report.removed == 5  # etc/a, gone, opt/keep, opt/sub, var/log (replaced)
    assert report.files == 2 and report.dirs == 2


def test_an_opaque_marker_spares_the_layer_s_own_entries_whatever_their_order(base) -> None:
    apply_tar(Pipe(archive(
        directory("opt"), file("opt/-first", b"F"), directory("opt/sub"), file("opt/sub/y", b"Y"),
        file("opt/.wh..wh..opq"), file("opt/z", b"Z"),
    )), base, layer=True)
    assert {k: v for k, v in listing(base).items() if k.startswith("opt")} == {
        "opt": "dir", "opt/-first": "F", "opt/sub": "dir", "opt/sub/y": "Y", "opt/z": "Z"}  # not opt/keep, opt/sub/x


def test_a_whiteout_spares_an_entry_of_its_own_layer(base) -> None:
    apply_tar(Pipe(archive(file("etc/c", b"C"), file("etc/.wh.c"), file("etc/.wh.b"), file("etc/b", b"B2"))),
              base, layer=True)
    assert listing(base)["etc/c"] == "C" and listing(base)["etc/b"] == "B2"


@pytest.mark.parametrize("name", [".wh..wh.plnk", ".wh..", ".wh."])
def test_reserved_and_malformed_whiteouts_are_refused(base, name) -> None:
    with pytest.raises(UnsafeArchiveError, match="a whiteout of a reserved or malformed name"):
        apply_tar(Pipe(archive(file(f"etc/{name}"))), base, layer=True)
    assert listing(base)["etc/a"] == "A"


def test_replacing_a_file_leaves_its_other_hard_links_alone(base) -> None:
    apply_tar(Pipe(archive(file("f", b"old"), hardlink("g", "f"))), base)
    apply_tar(Pipe(archive(file("f", b"new"))), base, layer=True)
    assert (base / "f").read_text() == "new" and (base / "g").read_text() == "old"
    assert (base / "f").stat().st_ino != (base / "g").stat().st_ino


def test_type_changes_remove_the_old_entry(base) -> None:
    report = apply_tar(Pipe(archive(
        file("opt", b"now a file"),  # was a directory with contents
        directory("etc/a"), file("etc/a/in", b"I"),  # was a file
        symlink("var", "opt"),  # was a directory
    )), base, layer=True)
    assert listing(base) == {"etc": "dir", "etc/a": "dir", "etc/a/in": "I", "etc/b": "B", "gone": "dir",
                             "gone/l": "-> /etc", "gone/y": "Y", "opt": "now a file", "var": "-> opt"}
    assert report.removed == 3
    assert not [name for name in os.listdir(base) if name.startswith(".peagent")]  # no temporary left behind


def test_a_directory_entry_over_a_directory_keeps_its_contents_and_takes_the_new_metadata(base) -> None:
    apply_tar(Pipe(archive(directory("etc", mode=0o750, uid=4, mtime=1_234_567_890))), base, layer=True)
    st = (base / "etc").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime) == (0o750, 4, 1_234_567_890)
    assert listing(base)["etc/a"] == "A"


def test_what_a_default_acl_would_give_is_dropped_where_the_archive_has_no_acl(base) -> None:
    os.setxattr(base / "var", acl.DEFAULT, acl.encode("user::rwx,group::r-x,group:50:rwx,mask::rwx,other::---"))
    apply_tar(Pipe(archive(file("var/new", b"n", mode=0o644), directory("var/d", mode=0o755),
                           file("var/acl", b"a", mode=0o640, pax={"SCHILY.acl.access":
                                                                  "user::rw-,group::r--,group:50:r--,mask::r--,other::---"}))),
              base, layer=True)
    for name in ("var/new", "var/d"):
        assert acl.ACCESS not in os.listxattr(base / name), name
    assert acl.DEFAULT not in os.listxattr(base / "var/d")
    assert stat.S_IMODE((base / "var/new").stat().st_mode) == 0o644
    assert acl.decode(os.getxattr(base / "var/acl", acl.ACCESS)) == "user::rw-,group::r--,group:50:r--,mask::r--,other::---"
