"""apply_tar with kept paths (in-place imaging): the user's data stays, whatever the image carries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peagent.errors import ImageError, UnsafeArchiveError
from peagent.files.extract import apply_tar
from tests.unit.files.tarcraft import Pipe, archive, directory, file, hardlink, listing, symlink


@pytest.fixture
def kept(tmp_path: Path) -> Path:
    """A target after the old OS was deleted: only the user's home and srv remain."""
    root = tmp_path / "target"
    (root / "home/ann").mkdir(parents=True)
    (root / "home/ann/notes").write_bytes(b"mine")
    (root / "srv/www").mkdir(parents=True)
    (root / "srv/www/index").write_bytes(b"site")
    os.chmod(root / "home", 0o700)
    return root


def test_entries_in_kept_data_are_left_out_and_the_rest_applied(kept) -> None:
    report = apply_tar(Pipe(archive(
        directory("etc"), file("etc/os-release", b"NEW"),
        directory("home", mode=0o755), directory("home/ann"), file("home/ann/notes", b"skeleton"),
        file("home/ann/.bashrc", b"rc"),
        directory("srv"), file("srv/www/index", b"default page"),
        directory("var/lib/data"), file("var/lib/data/x", b"X"),
    )), kept, keep=["home", "srv", "var/lib/data"])
    assert listing(kept) == {
        "etc": "dir", "etc/os-release": "NEW",
        "home": "dir", "home/ann": "dir", "home/ann/notes": "mine",
        "srv": "dir", "srv/www": "dir", "srv/www/index": "site",
        "var": "dir", "var/lib": "dir", "var/lib/data": "dir", "var/lib/data/x": "X",  # not held: filled
    }
    assert os.stat(kept / "home").st_mode & 0o777 == 0o700  # the kept directory keeps its own mode
    assert report.kept == 6  # home, home/ann, notes, .bashrc, srv, srv/www/index


def test_whiteouts_spare_kept_data_and_the_way_to_it(kept) -> None:
    (kept / "var/lib/db").mkdir(parents=True)
    (kept / "var/lib/db/rows").write_bytes(b"R")
    (kept / "var/cache").mkdir()
    (kept / "var/cache/junk").write_bytes(b"J")
    apply_tar(Pipe(archive(file(".wh.home"), file("srv/.wh.www"), directory("var"), file("var/.wh..wh..opq"))),
              kept, layer=True, keep=["home", "srv", "var/lib/db"])
    found = listing(kept)
    assert found["home/ann/notes"] == "mine" and found["srv/www/index"] == "site"
    assert found["var/lib/db/rows"] == "R"
    assert "var/cache" not in found  # not kept: the opaque marker cleared it


def test_an_entry_that_would_replace_the_way_to_kept_data_is_left_out(kept) -> None:
    report = apply_tar(Pipe(archive(symlink("srv", "var/srv"), file("home", b"not a directory"),
                                    hardlink("etc-notes", "home/ann/notes"))),
                       kept, keep=["home", "srv/www"])
    found = listing(kept)
    assert found["srv/www/index"] == "site" and found["home/ann/notes"] == "mine"
    assert "etc-notes" not in found
    assert report.kept == 3


def test_a_kept_path_must_be_plainly_relative(kept) -> None:
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.' component"):
        apply_tar(Pipe(archive(directory("etc"))), kept, keep=["home/../etc"])
    with pytest.raises(ImageError, match="target directory itself"):
        apply_tar(Pipe(archive(directory("etc"))), kept, keep=["."])
