"""The new OS's etc/fstab after an in-place re-image (merge: pure, text in, text and notes out)."""

from __future__ import annotations

import pytest

from peagent.inplace.fstab import Entry, merge, parse
from peagent.inplace.policy import LINUX_KEEP

KEEP = (*LINUX_KEEP, "opt/data")
OLD = """# the old OS's fstab
UUID=0ld-r00t / ext4 errors=remount-ro 0 1
UUID=AAAA-BBBB /boot/efi vfat umask=0077 0 1
/swapfile none swap sw 0 0
UUID=1111-var /var/log ext4 defaults 0 2
UUID=2222-shared /home/shared ext4 defaults 0 2
UUID=3333-data   /opt/data   xfs   noatime   0 2
UUID=4444-opt /opt ext4 defaults 0 2
"""
IMAGE = """# /etc/fstab: static file system information.

UUID=5e3d0a1c-build / ext4 errors=remount-ro,noatime 0 1
UUID=DE30-E5F0 /boot/efi vfat umask=0077,nofail 0 0
tmpfs /tmp tmpfs mode=1777,nosuid 0 0
"""


def lines(text: str) -> list[str]:
    return text.split("\n")


def test_merge_of_an_image_and_an_old_os() -> None:
    text, notes = merge(IMAGE, OLD, "UUID=new-root", "ext4", KEEP)
    assert lines(text) == [
        "# /etc/fstab: static file system information.",
        "",
        "UUID=new-root\t/\text4\terrors=remount-ro,noatime\t0\t1",
        "UUID=AAAA-BBBB\t/boot/efi\tvfat\tumask=0077,nofail\t0\t0",
        "tmpfs\t/tmp\ttmpfs\tmode=1777,nosuid\t0\t0",
        "# carried over from the OS this one replaced in place (peagent)",
        "/swapfile\tnone\tswap\tsw\t0\t0",
        "UUID=2222-shared\t/home/shared\text4\tdefaults\t0\t2",
        "UUID=3333-data\t/opt/data\txfs\tnoatime\t0\t2",
        "",
    ]
    assert notes == [
        "/boot/efi: this machine's UUID=AAAA-BBBB",
        "none: carried over from the old OS (/swapfile)",
        "/var/log: the old OS's mount of UUID=1111-var dropped (not kept data)",
        "/home/shared: carried over from the old OS (UUID=2222-shared)",
        "/opt/data: carried over from the old OS (UUID=3333-data)",
        "/opt: the old OS's mount of UUID=4444-opt dropped (not kept data)",
    ]


def test_the_root_keeps_the_images_type_and_options() -> None:
    text, notes = merge("LABEL=img / xfs noatime,logbsize=256k 1 1\n", "UUID=old / ext4 defaults 0 1\n",
                        "PARTUUID=0fc63daf-2", "ext4", ())
    assert text == "PARTUUID=0fc63daf-2\t/\txfs\tnoatime,logbsize=256k\t1\t1\n"
    assert notes == []


def test_a_root_line_is_added_when_the_image_has_none() -> None:
    text, notes = merge("tmpfs /tmp tmpfs defaults 0 0\n", OLD, "UUID=new-root", "ext4", ())
    assert lines(text)[:2] == ["tmpfs\t/tmp\ttmpfs\tdefaults\t0\t0", "UUID=new-root\t/\text4\tdefaults\t0\t1"]
    assert notes[0] == "/: added, UUID=new-root (the image's fstab had no root entry)"


def test_kept_data_is_matched_by_whole_path_components() -> None:
    old = "UUID=a /srv ext4 defaults 0 2\nUUID=b /srvdata ext4 defaults 0 2\nUUID=c /home ext4 defaults 0 2\n"
    text, notes = merge("UUID=img / ext4 defaults 0 1\n", old, "UUID=new", "ext4", LINUX_KEEP)
    assert lines(text)[1:] == ["# carried over from the OS this one replaced in place (peagent)",
                               "UUID=a\t/srv\text4\tdefaults\t0\t2", "UUID=c\t/home\text4\tdefaults\t0\t2", ""]
    assert "/srvdata: the old OS's mount of UUID=b dropped (not kept data)" in notes


def test_nothing_carried_means_no_comment_line() -> None:
    text, notes = merge(IMAGE, "UUID=old / ext4 defaults 0 1\nUUID=v /var ext4 defaults 0 2\n", "UUID=new",
                        "ext4", KEEP)
    assert "# carried over" not in text
    assert notes == ["/var: the old OS's mount of UUID=v dropped (not kept data)"]


@pytest.mark.parametrize("image", [None, ""])
@pytest.mark.parametrize("old", [None, ""])
def test_no_fstabs_at_all(image: str | None, old: str | None) -> None:
    assert merge(image, old, "UUID=new", "xfs", KEEP) == (
        "UUID=new\t/\txfs\tdefaults\t0\t1\n", ["/: added, UUID=new (the image's fstab had no root entry)"])


def test_no_old_fstab_leaves_the_images_mounts_alone() -> None:
    text, notes = merge(IMAGE, None, "UUID=new-root", "ext4", KEEP)
    assert lines(text)[3] == "UUID=DE30-E5F0\t/boot/efi\tvfat\tumask=0077,nofail\t0\t0"
    assert notes == []


def test_parse_keeps_other_lines_as_they_were() -> None:
    assert parse("# c\n\n  \nbroken line\nUUID=x / ext4\nUUID=y /a xfs rw 0 2 extra\n") == [
        "# c", "", "  ", "broken line", Entry("UUID=x", "/", "ext4"), Entry("UUID=y", "/a", "xfs", "rw", "0", "2")]


def test_the_old_swap_is_carried_and_the_image_s_dropped() -> None:
    image = IMAGE + "UUID=build-swap none swap sw 0 0\n"
    text, notes = merge(image, OLD, "UUID=new-root", "ext4", KEEP)
    assert "/swapfile\tnone\tswap" in text and "build-swap" not in text
    assert any("/swapfile" in n for n in notes) and any("build-swap" in n and "dropped" in n for n in notes)
