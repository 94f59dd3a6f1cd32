"""peagent.files.layers: base + layer (applied with GNU tar and the whiteouts processed here) == new."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
from pathlib import Path

import pytest

from peagent.cli import main
from peagent.errors import ImageError, ManifestError
from peagent.files.layers import write_layer
from peagent.files.tree import TreeReport
from peagent.image.format import LayerRef, parse_manifest
from peagent.image.inspect import inspect_image
from tests.unit.files.test_tree import (
    ACL,
    OLD,
    Pipe,
    acl_xattr,
    digest,
    gnu_extract,
    image_bytes,
    link_groups,
    make_tree,
    members,
    needs_root,
    tree_tar,
)

pytestmark = needs_root


def settle(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        os.utime(path, ns=(OLD, OLD), follow_symlinks=False)


def copy(src: Path, dst: Path, tmp: Path) -> Path:
    """A faithful copy (owners, xattrs, ACLs, links, devices), made by the writer and GNU tar."""
    tree_tar(src, tmp / f"{dst.name}.tar")
    gnu_extract(tmp / f"{dst.name}.tar", dst)
    return dst


def layer(base: Path, new: Path, archive: Path) -> tuple[TreeReport, list[str]]:
    with archive.open("wb") as f:
        report = write_layer(base, new, f)
    return report, [m.name + "/" if m.isdir() else m.name for m in members(archive)]


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def apply_layer(archive: Path, root: Path) -> None:
    """The whiteouts first (they act only on what lies below this layer), then the entries, by GNU tar."""
    for member in members(archive):
        head, _, name = member.name.rstrip("/").rpartition("/")
        where = root / head
        if name == ".wh..wh..opq":
            if where.is_dir() and not where.is_symlink():
                for child in where.iterdir():
                    remove(child)
        elif name.startswith(".wh."):
            remove(where / name[4:])
    gnu_extract(archive, root, "--exclude=.wh.*")


def base_tree(tmp_path: Path) -> Path:
    base = make_tree(tmp_path / "base")
    (base / "usr" / "lib").mkdir(parents=True)
    (base / "usr" / "lib" / "libc.so").write_text("the base's libc")
    os.symlink("usr/lib", base / "lib")  # merged /usr: a symlink that a later tree makes a directory
    (base / "conf").write_text("a file that becomes a directory")
    (base / "olddir").mkdir()
    (base / "olddir" / "f").write_text("a directory that becomes a file")
    (base / "data").mkdir()
    for name in "ab":
        (base / "data" / name).write_text(name)
    settle(base)
    return base


def test_base_and_layer_make_the_new_tree(tmp_path: Path) -> None:
    base = base_tree(tmp_path)
    new = copy(base, tmp_path / "new", tmp_path)
    (new / "etc/hostname").write_text("GOLDEN\n")  # same size, same mtime: only the data tell
    os.utime(new / "etc/hostname", ns=(OLD, OLD))
    os.chmod(new / "etc/empty", 0o600)
    os.chown(new / "home/user", 2000, 2000)
    os.setxattr(new / "attrs", "user.comment", b"changed")
    os.setxattr(new / "shared", "system.posix_acl_default", acl_xattr((1, 7, 2**32 - 1), (4, 0, 2**32 - 1),
                                                                       (0x20, 0, 2**32 - 1)))
    (new / "bin/rel-link").unlink()
    os.symlink("../etc/empty", new / "bin/rel-link")
    (new / "dev/loop0").unlink()
    os.mknod(new / "dev/loop0", stat.S_IFBLK | 0o660, os.makedev(7, 1))
    (new / "café.txt").unlink()
    shutil.rmtree(new / ("d" * 60))
    (new / "lib").unlink()
    (new / "lib").mkdir()
    (new / "lib/libc.so").write_text("the new libc")
    (new / "conf").unlink()
    (new / "conf").mkdir()
    (new / "conf/main").write_text("now a directory")
    shutil.rmtree(new / "olddir")
    (new / "olddir").write_text("now a file")
    for name in "ab":
        (new / "data" / name).unlink()
    (new / "data/c").write_text("c")
    os.link(new / "bin/tool", new / "bin/tool4")
    (new / "opt/app").mkdir(parents=True)
    (new / "opt/app/run").write_text("#!/bin/sh\n")

    report, names = layer(base, new, tmp_path / "layer.tar")
    assert names == [
        "./", "attrs", "bin/", "bin/rel-link", "bin/tool", "bin/tool2", "bin/tool4", ".wh.café.txt",
        ".wh.conf", "conf/", "conf/.wh..wh..opq", "conf/main",  # a file became a directory
        "data/", "data/.wh..wh..opq", "data/c",  # none of its names is left: opaque
        ".wh." + "d" * 60,  # a deleted directory: one whiteout
        "dev/", "dev/loop0", "etc/empty", "etc/hostname", "etc/tool3", "home/user",
        ".wh.lib", "lib/", "lib/.wh..wh..opq", "lib/libc.so",  # a symlink became a directory
        ".wh.olddir", "olddir",  # a directory became a file
        "opt/", "opt/app/", "opt/app/run", "shared/"]
    assert (report.whiteouts, report.hardlinks, report.files) == (8, 3, 10)

    applied = copy(base, tmp_path / "applied", tmp_path)
    apply_layer(tmp_path / "layer.tar", applied)
    assert digest(applied, dir_mtimes=False) == digest(new, dir_mtimes=False)
    assert link_groups(applied) == link_groups(new)
    assert (applied / "usr/lib/libc.so").read_text() == "the base's libc"  # nothing was written through lib


def test_identical_trees_give_an_empty_layer(tmp_path: Path) -> None:
    base = base_tree(tmp_path)
    new = copy(base, tmp_path / "new", tmp_path)
    report, names = layer(base, new, tmp_path / "layer.tar")
    assert names == [] and report == TreeReport()


def test_layers_apply_in_order(tmp_path: Path) -> None:
    v1 = make_tree(tmp_path / "v1")
    v2 = copy(v1, tmp_path / "v2", tmp_path)
    (v2 / "opt/new").mkdir(parents=True)
    (v2 / "opt/new/file").write_text("added by layer 2")
    (v2 / "etc/empty").unlink()
    v3 = copy(v2, tmp_path / "v3", tmp_path)
    shutil.rmtree(v3 / "opt/new")  # a whiteout of what layer 2 added
    (v3 / "etc/empty").mkdir()  # back, as a directory
    (v3 / "etc/empty/inside").write_text("3")
    (v3 / "etc/tool3").unlink()  # one name of a hard-linked file fewer: a whiteout, no copy of the data

    layer(v1, v2, tmp_path / "l2.tar")
    _, names = layer(v2, v3, tmp_path / "l3.tar")
    assert names == ["etc/", "etc/empty/", "etc/empty/inside", "etc/.wh.tool3", "opt/", "opt/.wh..wh..opq"]
    applied = copy(v1, tmp_path / "applied", tmp_path)
    apply_layer(tmp_path / "l2.tar", applied)
    apply_layer(tmp_path / "l3.tar", applied)
    assert digest(applied, dir_mtimes=False) == digest(v3, dir_mtimes=False)
    assert link_groups(applied) == link_groups(v3)


def test_a_name_that_reads_as_a_whiteout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".wh.evil").write_text("")
    with pytest.raises(ImageError, match=r"b/\.wh\.evil: a name starting with \.wh\. cannot be carried in a layer"):
        write_layer(tmp_path / "a", tmp_path / "b", Pipe())


def test_cli_builds_a_layer_image_that_names_its_base_tree(tmp_path: Path) -> None:
    base = base_tree(tmp_path)
    new = copy(base, tmp_path / "new", tmp_path)
    (new / "etc/hostname").write_text("layered\n")
    os.setxattr(new / "attrs", "system.posix_acl_access", ACL.replace(struct.pack("<I", 1000), struct.pack("<I", 1001)))
    assert main(["keys", "-o", str(tmp_path / "k")]) == 0
    image = tmp_path / "img"
    assert main(["image", "build", "--files", str(new), "--base-tree", str(base), "-o", str(image), "--name", "root",
                 "--version", "2", "--key", str(tmp_path / "k" / "peagent.key")]) == 0
    assert main(["image", "verify", str(image), "--key", str(tmp_path / "k" / "peagent.pub")]) == 0
    m = parse_manifest((image / "manifest.json").read_bytes())
    assert (m.kind, m.layer, m.source) == ("files", LayerRef("base"), "new")
    assert "layer over the tree base" in inspect_image(str(image)).render()
    direct = Pipe()
    write_layer(base, new, direct)
    assert image_bytes(image) == bytes(direct.data)  # what the pipe carried is the layer, whole


def test_the_layer_field_of_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_text("x")
    assert main(["image", "build", "--files", str(tmp_path / "t"), "-o", str(tmp_path / "img"), "--name", "n",
                 "--version", "1"]) == 0
    doc = json.loads((tmp_path / "img" / "manifest.json").read_text())
    assert "layer" not in doc  # not a layer: the field is absent, as in every manifest before it
    for value, message in (({"base_tree": "rootfs"}, None), (None, None),
                           ("yes", 'manifest field layer: expected an object or null, found "yes"'),
                           ({}, "manifest field base_tree: expected the name of the tree the layer was made against")):
        doc["layer"] = value
        if message is None:
            m = parse_manifest(json.dumps(doc).encode())
            assert m.layer == (LayerRef(**value) if value else None)
            assert json.loads(m.to_json()).get("layer") == value
        else:
            with pytest.raises(ManifestError, match=message):
                parse_manifest(json.dumps(doc).encode())
    doc.update(layer={"base_tree": "rootfs"}, kind="disk")
    with pytest.raises(ManifestError, match="only a file image can be a layer, but kind is disk"):
        parse_manifest(json.dumps(doc).encode())
