"""WIM images with the real wimlib tools (wimtools), on loop devices: ext4 and NTFS (mkntfs, ntfs-3g).

A "golden" NTFS volume is built the way Windows would leave one, through ntfs-3g's extended
attributes: a file with a security descriptor of its own, a named stream (Zone.Identifier), a short
name, an object id and the hidden attribute, a directory, and a native Windows symlink (a reparse point
with tag IO_REPARSE_TAG_SYMLINK). It is captured in wimlib's NTFS mode and applied both ways, so the
tests measure what each way keeps (docs/wim.md quotes them). Split and delta WIMs are made from a
Linux tree on ext4.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from peagent.errors import FilesystemError, ImageError
from peagent.files import ntfs, wim

pytestmark = pytest.mark.root

MIB = 1 << 20
SYMLINK_TAG = 0xA000000C
HIDDEN = 0x2


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sid(authority: int, *subauthorities: int) -> bytes:
    return (struct.pack("<BB", 1, len(subauthorities)) + authority.to_bytes(6, "big")
            + b"".join(struct.pack("<I", s) for s in subauthorities))


def security_descriptor(owner: bytes, group: bytes, aces: list[tuple[int, bytes]]) -> bytes:
    """A self-relative security descriptor with a DACL of ACCESS_ALLOWED aces (mask, sid)."""
    body = b"".join(struct.pack("<BBHI", 0, 0, 8 + len(s), mask) + s for mask, s in aces)
    dacl = struct.pack("<BBHHH", 2, 0, 8 + len(body), len(aces), 0) + body
    header = struct.pack("<BBHIIII", 1, 0, 0x8004, 20, 20 + len(owner), 0, 20 + len(owner) + len(group))
    return header + owner + group + dacl


# Administrators own it, SYSTEM may do anything, Users may read: not what ntfs-3g gives a new file.
FILE_SD = security_descriptor(sid(5, 32, 544), sid(5, 18), [(0x1F01FF, sid(5, 18)), (0x1200A9, sid(5, 32, 545))])
ZONE = b"[ZoneTransfer]\r\nZoneId=3\r\n"
OBJECT_ID = bytes(range(16))
CONTENT = b"hello windows\r\n" * 1000


def symlink_reparse(target: str) -> bytes:
    name = target.encode("utf-16le")
    data = struct.pack("<HHHHI", 0, len(name), len(name), len(name), 1) + name + name  # relative
    return struct.pack("<IHH", SYMLINK_TAG, len(data), 0) + data


def xattr(path: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise


@pytest.fixture
def ntfs_volume(loop: Callable[..., str]) -> Callable[[], str]:
    """``ntfs_volume()``: a fresh, unmounted 32 MiB NTFS volume on a loop device."""

    def make() -> str:
        device = loop(32 * MIB)
        run("mkntfs", "--fast", "--quiet", "--force", device)
        return device

    return make


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def mountpoint(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


@pytest.fixture
def ext4(loop: Callable[..., str], tmp_path: Path, mounts: ExitStack) -> Callable[[str], Path]:
    """``ext4(name)``: a mounted 64 MiB ext4 filesystem on a loop device."""

    def make(name: str) -> Path:
        device = loop(64 * MIB)
        run("mkfs.ext4", "-F", "-q", device)
        where = mountpoint(tmp_path, name)
        run("mount", device, str(where))
        mounts.callback(subprocess.run, ["umount", str(where)], check=False)
        return where

    return make


@pytest.fixture
def golden(ntfs_volume: Callable[[], str], tmp_path: Path) -> wim.WimInfo:
    """golden.wim, captured in NTFS mode from a volume holding Windows metadata."""
    device = ntfs_volume()
    with ntfs.mounted(device, mountpoint(tmp_path, "golden")) as root:
        doc = root / "LongFileName.txt"
        doc.write_bytes(CONTENT)
        os.setxattr(doc, "user.Zone.Identifier", ZONE)
        os.setxattr(doc, "system.ntfs_acl", FILE_SD)
        os.setxattr(doc, "system.ntfs_dos_name", b"LONGFI~1.TXT")
        os.setxattr(doc, "system.ntfs_object_id", OBJECT_ID)
        os.setxattr(doc, "system.ntfs_attrib", struct.pack("<I", 0x20 | HIDDEN))
        (root / "Users" / "Default").mkdir(parents=True)
        (root / "link.txt").touch()
        os.setxattr(root / "link.txt", "system.ntfs_reparse_data", symlink_reparse("LongFileName.txt"))
    return wim.capture(device, tmp_path / "golden.wim", "golden")


def test_ntfs_mode_keeps_the_windows_metadata(golden, ntfs_volume, tmp_path):
    device = ntfs_volume()
    seen: list[tuple[int, int]] = []
    applied = wim.apply(golden.path, 1, device, ntfs_volume=True, progress=lambda d, t: seen.append((d, t)))
    assert applied.ntfs_volume and applied.name == "golden" and applied.warnings == ()
    assert seen and seen[-1][0] == seen[-1][1] == applied.data_bytes > len(CONTENT) - 1024  # KiB-rounded
    with ntfs.mounted(device, mountpoint(tmp_path, "check"), readonly=True) as root:
        doc = root / "LongFileName.txt"
        assert doc.read_bytes() == CONTENT
        assert xattr(doc, "user.Zone.Identifier") == ZONE
        assert xattr(doc, "system.ntfs_acl") == FILE_SD
        assert xattr(doc, "system.ntfs_dos_name") == b"LONGFI~1.TXT"
        assert xattr(doc, "system.ntfs_object_id")[:16] == OBJECT_ID
        assert struct.unpack("<I", xattr(doc, "system.ntfs_attrib"))[0] & HIDDEN
        assert xattr(root / "link.txt", "system.ntfs_reparse_data") == symlink_reparse("LongFileName.txt")
        assert (root / "Users" / "Default").is_dir()


def test_directory_mode_into_an_ntfs3g_mount_drops_the_windows_metadata(golden, ntfs_volume, tmp_path):
    device = ntfs_volume()
    with ntfs.mounted(device, mountpoint(tmp_path, "target")) as root:
        applied = wim.apply(golden.path, 1, root)
        doc = root / "LongFileName.txt"
        assert doc.read_bytes() == CONTENT  # the contents arrive ...
        assert xattr(doc, "user.Zone.Identifier") is None  # ... but not the named stream,
        acl = xattr(doc, "system.ntfs_acl")  # nor the security descriptor: ntfs-3g's default for new files,
        assert acl != FILE_SD and struct.pack("<I", 0x1F01FF) + sid(1, 0) in acl  # Everyone: full control
        assert xattr(doc, "system.ntfs_dos_name") is None  # nor the short name,
        assert xattr(doc, "system.ntfs_object_id") is None  # nor the object id,
        assert not struct.unpack("<I", xattr(doc, "system.ntfs_attrib"))[0] & HIDDEN  # nor the attributes;
        link = root / "link.txt"  # and the symlink is ntfs-3g's Interix kind, which Windows does not follow
        assert os.readlink(link) == "LongFileName.txt" and xattr(link, "system.ntfs_reparse_data") is None
    said = " ".join(applied.warnings)
    for dropped in ("named data streams", "security descriptors", "object IDs", "DOS names"):
        assert dropped in said, said


def test_ntfs_mode_refuses_a_mounted_volume(golden, ntfs_volume, tmp_path):
    device = ntfs_volume()
    with ntfs.mounted(device, mountpoint(tmp_path, "busy")) as root:
        with pytest.raises(FilesystemError, match=f"{device} is mounted on {root}: unmount it first"):
            wim.apply(golden.path, 1, device, ntfs_volume=True)
        assert os.listdir(root) == []


def test_ntfs_mode_refuses_clashing_names_before_writing(golden, ntfs_volume, tmp_path):
    device = ntfs_volume()
    with ntfs.mounted(device, mountpoint(tmp_path, "old")) as root:
        (root / "users" / "alice").mkdir(parents=True)  # another case: still the same name to Windows
        (root / "kept.txt").write_text("keep")
    before = ntfs.root_names(device)
    with pytest.raises(FilesystemError, match=r"already holds users, which the image also has at its root"):
        wim.apply(golden.path, 1, device, ntfs_volume=True)
    assert ntfs.root_names(device) == before == ["kept.txt", "users"]


def test_rename_on_ntfs3g_keeps_metadata_and_the_short_name(golden, ntfs_volume, tmp_path):
    device = ntfs_volume()
    wim.apply(golden.path, 1, device, ntfs_volume=True)
    with ntfs.mounted(device, mountpoint(tmp_path, "aside")) as root:
        (root / "peagent.kept").mkdir()
        ntfs.rename(root / "LongFileName.txt", root / "peagent.kept" / "LongFileName.txt")
        moved = root / "peagent.kept" / "LongFileName.txt"
        assert ntfs.short_name(moved) == "LONGFI~1.TXT"
        assert xattr(moved, "system.ntfs_acl") == FILE_SD and xattr(moved, "user.Zone.Identifier") == ZONE
        assert xattr(moved, "system.ntfs_object_id")[:16] == OBJECT_ID
        os.rename(moved, root / "LongFileName.txt")  # a plain rename loses the short name: why ntfs.rename exists
        assert ntfs.short_name(root / "LongFileName.txt") is None


def test_in_place_moves_kept_data_aside_applies_in_ntfs_mode_and_restores_it(golden, ntfs_volume, tmp_path):
    """The mechanism docs/wim.md recommends for in-place imaging, end to end on one volume."""
    device = ntfs_volume()
    with ntfs.mounted(device, mountpoint(tmp_path, "old")) as root:  # the old Windows, and a user's files
        (root / "Windows" / "System32").mkdir(parents=True)
        (root / "Windows" / "System32" / "old.dll").write_bytes(b"MZ old")
        thesis = root / "Users" / "Alice Liddell" / "Documents" / "Thesis Draft.docx"
        thesis.parent.mkdir(parents=True)
        thesis.write_bytes(b"years of work")
        os.setxattr(thesis, "system.ntfs_acl", FILE_SD)
        os.setxattr(thesis, "user.Zone.Identifier", ZONE)
        os.setxattr(thesis.parent.parent, "system.ntfs_dos_name", b"ALICEL~1")  # Windows gives long names a short one
    with ntfs.mounted(device, mountpoint(tmp_path, "aside")) as root:  # delete the OS, move the kept data aside
        subprocess.run(["rm", "-r", str(root / "Windows")], check=True)
        (root / "peagent.kept").mkdir()
        ntfs.rename(root / "Users", root / "peagent.kept" / "Users")
    wim.apply(golden.path, 1, device, ntfs_volume=True)
    with ntfs.mounted(device, mountpoint(tmp_path, "restore")) as root:  # put the users back beside the new ones
        ntfs.rename(root / "peagent.kept" / "Users" / "Alice Liddell", root / "Users" / "Alice Liddell")
        os.rmdir(root / "peagent.kept" / "Users")
        os.rmdir(root / "peagent.kept")
    with ntfs.mounted(device, mountpoint(tmp_path, "check"), readonly=True) as root:
        assert sorted(os.listdir(root)) == ["LongFileName.txt", "Users", "link.txt"]
        assert sorted(os.listdir(root / "Users")) == ["Alice Liddell", "Default"]
        thesis = root / "Users" / "Alice Liddell" / "Documents" / "Thesis Draft.docx"
        assert thesis.read_bytes() == b"years of work"
        assert xattr(thesis, "system.ntfs_acl") == FILE_SD and xattr(thesis, "user.Zone.Identifier") == ZONE
        assert ntfs.short_name(root / "Users" / "Alice Liddell") == "ALICEL~1"
        assert xattr(root / "LongFileName.txt", "system.ntfs_acl") == FILE_SD  # the new OS's metadata, whole


@pytest.fixture
def tree(ext4) -> Path:
    """A Linux tree on ext4: a 3 MiB file, a directory, a symlink, an extended attribute."""
    root = ext4("tree") / "src"
    (root / "dir").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(3 * MIB))
    (root / "dir" / "a.txt").write_text("alpha\n")
    os.setxattr(root / "dir" / "a.txt", "user.peagent", b"kept")
    (root / "link").symlink_to("dir/a.txt")
    return root


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): ("-> " + os.readlink(p) if p.is_symlink() else sha256(p) if p.is_file() else "/")
            for p in sorted(root.rglob("*"))}


def test_ext4_round_trip_with_progress(tree, ext4, tmp_path):
    seen: list[tuple[int, int]] = []
    captured = wim.capture(tree, tmp_path / "tree.wim", "tree", unix_data=True)
    assert captured.image_count == 1 and captured.images[0].files == 3
    target = ext4("target")
    applied = wim.apply(captured.path, 1, target, unix_data=True, progress=lambda d, t: seen.append((d, t)))
    assert digest(target) == {"lost+found": "/", **digest(tree)}
    assert os.getxattr(target / "dir" / "a.txt", "user.peagent") == b"kept"
    assert len(seen) > 10 and all(t == seen[0][1] for _, t in seen)
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})  # strictly increasing
    assert seen[-1] == (applied.data_bytes, applied.data_bytes) and applied.data_bytes >= 3 * MIB - 1024


def test_split_wim_needs_every_part(tree, ext4, tmp_path):
    whole = wim.capture(tree, tmp_path / "tree.wim", "tree", compress="none")
    parts = wim.split(whole.path, tmp_path / "tree.swm", 1)
    assert [p.name for p in parts] == ["tree.swm", "tree2.swm", "tree3.swm"]
    first = wim.info(parts[0])
    assert (first.part, first.parts, first.guid) == (1, 3, wim.info(parts[2]).guid)
    target = ext4("target")
    with pytest.raises(ImageError, match=r"the split WIM tree.swm has 3 parts, but part 2 \(tree2.swm\) is not among"):
        wim.apply(parts[0], 1, target, refs=[parts[2]])
    with pytest.raises(ImageError, match=r"tree2.swm is part 2 of 3 of a split WIM: apply its first part"):
        wim.apply(parts[1], 1, target, refs=[parts[0], parts[2]])
    assert os.listdir(target) == ["lost+found"]
    wim.apply(parts[0], 1, target, refs=parts[1:])
    assert digest(target) == {"lost+found": "/", **digest(tree)}


def test_delta_wim_applies_over_its_base_and_names_it_when_missing(tree, ext4, tmp_path):
    base = wim.capture(tree, tmp_path / "base.wim", "v1")
    (tree / "dir" / "b.txt").write_text("new in v2\n")
    (tree / "dir" / "a.txt").unlink()
    delta = wim.capture(tree, tmp_path / "v2.dwm", "v2", delta_from=base.path)
    assert delta.images[0].delta_base == wim.DeltaBase("base.wim", base.guid)
    assert delta.path.stat().st_size < base.path.stat().st_size // 10  # big.bin is only in the base

    target = ext4("target")
    with pytest.raises(ImageError, match=rf"v2.dwm \(image 1\) is a delta WIM: it holds only what its base base.wim "
                                         rf"\(GUID {base.guid}\) lacks, and that base is missing \(refs given: none\); "
                                         r"pass base.wim as a ref"):
        wim.apply(delta.path, 1, target)
    wim.apply(delta.path, 1, target, refs=[base.path])
    assert digest(target) == {"lost+found": "/", **digest(tree)}

    other = tmp_path / "elsewhere"
    other.mkdir()
    impostor = wim.capture(tree, other / "base.wim", "v1 again")
    with pytest.raises(ImageError, match=rf"but the {impostor.path} given has GUID {impostor.guid}: that is another "
                                         "WIM of the same name"):
        wim.apply(delta.path, 1, ext4("again"), refs=[impostor.path])


def test_a_foreign_delta_without_its_base_fails_with_nothing_written(tree, ext4, tmp_path):
    base = wim.capture(tree, tmp_path / "base.wim", "v1")
    (tree / "new.txt").write_text("new\n")
    run("wimcapture", str(tree), str(tmp_path / "foreign.dwm"), "v2", f"--delta-from={base.path}")
    assert wim.info(tmp_path / "foreign.dwm").images[0].delta_base is None  # nothing names its base
    target = ext4("target")
    with pytest.raises(ImageError, match=r"file data it needs is in none of the WIMs given \(refs: none\)\. It is a "
                                         r"delta WIM whose base is missing.*Nothing was written.*blob not found"):
        wim.apply(tmp_path / "foreign.dwm", 1, target)
    assert os.listdir(target) == ["lost+found"]


def test_the_cli_captures_a_delta_and_reports_its_base(tmp_path, capsys):
    from peagent.cli import main

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(CONTENT)
    assert main(["wim", "capture", str(src), str(tmp_path / "base.wim"), "--name", "base"]) == 0
    (src / "sub" / "new.txt").write_bytes(b"only in the delta")
    assert main(["wim", "capture", str(src), str(tmp_path / "next.dwm"), "--name", "next",
                 "--delta-from", str(tmp_path / "base.wim")]) == 0
    capsys.readouterr()
    assert main(["wim", "info", str(tmp_path / "next.dwm")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["images"][0]["name"] == "next" and shown["images"][0]["files"] == 2
    assert shown["images"][0]["delta_base"]["name"] == "base.wim"
    assert shown["images"][0]["delta_base"]["guid"] == wim.info(tmp_path / "base.wim").guid
