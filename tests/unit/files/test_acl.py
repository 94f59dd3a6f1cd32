"""POSIX ACL text <-> the kernel's binary xattr form."""

from __future__ import annotations

import struct

import pytest

from peagent.files import acl

X = 0xFFFFFFFF


def test_encode_gives_the_kernel_layout_sorted_by_tag_then_id() -> None:
    blob = acl.encode("other::r-x\nuser:1000:r-x,user::rwx,group::r-x,user:7:-w-,mask::rwx # a comment")
    assert blob == struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in [
        (0x01, 7, X), (0x02, 2, 7), (0x02, 5, 1000), (0x04, 5, X), (0x10, 7, X), (0x20, 5, X)])
    assert acl.decode(blob) == "user::rwx,user:7:-w-,user:1000:r-x,group::r-x,mask::rwx,other::r-x"


def test_short_forms_and_star_s_numeric_field() -> None:
    assert acl.decode(acl.encode("u::rw,g::r,g:alice:rx:50,m:rx,o:---")) == \
        "user::rw-,group::r--,group:50:r-x,mask::r-x,other::---"


@pytest.mark.parametrize(("text", "problem"), [
    ("user::rwx,group::r-x", "has no other:: entry"),
    ("user::rwx,user:5:r--,group::r-x,other::---", "has named entries but no mask:: entry"),
    ("user::rwx,user::r--,group::r-x,other::---", "appears twice"),
    ("user::rwz,group::r-x,other::---", "are not like r-x"),
    ("user::rwx,group:staff:r-x,mask::r-x,group::r-x,other::---", "names group 'staff' without a numeric id"),
    ("user::rwx,mask:3:r-x,group::r-x,other::---", "a mask entry takes no qualifier"),
    ("owner::rwx", "is not tag:qualifier:permissions"),
])
def test_bad_text_says_what_is_wrong(text, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        acl.encode(text)


def test_bad_binary_is_refused() -> None:
    with pytest.raises(ValueError, match="version 1"):
        acl.decode(struct.pack("<I", 1))
    with pytest.raises(ValueError, match="not 4 \\+ 8"):
        acl.decode(struct.pack("<I", 2) + b"\0" * 5)
