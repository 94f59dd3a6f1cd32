"""POSIX ACLs: from the text form tar archives carry to the kernel's binary form, and back.

GNU tar (``--acls``) and star store a file's ACLs in pax records, ``SCHILY.acl.access`` and, for
directories, ``SCHILY.acl.default``, in the text form of acl(5): entries separated by commas or
newlines, each ``tag:qualifier:permissions``::

    user::rwx,user:1000:r-x,group::r-x,mask::r-x,other::r-x

The kernel takes an ACL as the extended attribute ``system.posix_acl_access`` (or
``system.posix_acl_default``) in a binary form (include/uapi/linux/posix_acl_xattr.h): a
little-endian u32 version, 2, then one 8-byte record per entry: u16 tag, u16 permissions (r=4,
w=2, x=1), u32 id (the uid or gid of a named entry, 0xFFFFFFFF for the others), sorted by tag
then id. Setting that attribute is all setfacl does, so the agent needs neither libacl nor
setfacl.

Qualifiers must be numeric (``user:1000:r-x``), or carry the number in star's fourth field
(``user:alice:r-x:1000``). A bare name (``user:alice:r-x``, what GNU tar writes) is refused: the
only users the agent could look it up among are the PE's, not the image's, and a wrong uid in an
ACL grants access to the wrong person. GNU tar with ``--xattrs`` also stores the binary form
(``SCHILY.xattr.system.posix_acl_access``), which the extractor prefers, so its archives apply.
"""

from __future__ import annotations

import struct

ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"

VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF

_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_TAGS = {"user": USER_OBJ, "u": USER_OBJ, "group": GROUP_OBJ, "g": GROUP_OBJ, "mask": MASK, "m": MASK,
         "other": OTHER, "o": OTHER}
_NAMES = {USER_OBJ: "user", USER: "user", GROUP_OBJ: "group", GROUP: "group", MASK: "mask", OTHER: "other"}
_NAMED = {USER_OBJ: USER, GROUP_OBJ: GROUP}  # a qualifier turns user:: into user:ID:


def encode(text: str) -> bytes:
    """The kernel's binary form of an ACL given in acl(5) text; ValueError says what is wrong."""
    entries: dict[tuple[int, int], int] = {}
    for raw in text.replace("\n", ",").split(","):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        tag, qualifier, perms = _parse_entry(entry)
        if (tag, qualifier) in entries:
            raise ValueError(f"ACL entry {entry!r} appears twice")
        entries[(tag, qualifier)] = perms
    tags = [tag for tag, _ in entries]
    for required in (USER_OBJ, GROUP_OBJ, OTHER):
        if required not in tags:
            raise ValueError(f"ACL {text.strip()!r} has no {_NAMES[required]}:: entry")
    if (USER in tags or GROUP in tags) and MASK not in tags:
        raise ValueError(f"ACL {text.strip()!r} has named entries but no mask:: entry")
    body = b"".join(_ENTRY.pack(tag, perms, qualifier) for (tag, qualifier), perms in sorted(entries.items()))
    return _HEADER.pack(VERSION) + body


def _parse_entry(entry: str) -> tuple[int, int, int]:
    fields = [field.strip() for field in entry.split(":")]
    if fields[0] not in _TAGS or not 2 <= len(fields) <= 4:
        raise ValueError(f"ACL entry {entry!r} is not tag:qualifier:permissions")
    tag = _TAGS[fields[0]]
    if len(fields) == 2:  # "other:r-x", "mask:rwx": the short form without a qualifier
        if tag not in (MASK, OTHER):
            raise ValueError(f"ACL entry {entry!r} is not tag:qualifier:permissions")
        fields.insert(1, "")
    qualifier, perms = fields[1], _perms(fields[2], entry)
    if not qualifier:
        return tag, UNDEFINED_ID, perms
    if tag not in _NAMED:
        raise ValueError(f"ACL entry {entry!r}: a {_NAMES[tag]} entry takes no qualifier")
    number = qualifier if qualifier.isdigit() else fields[3] if len(fields) == 4 else ""
    if not number.isdigit() or int(number) >= UNDEFINED_ID:
        raise ValueError(f"ACL entry {entry!r} names {_NAMES[tag]} {qualifier!r} without a numeric id; "
                         "names cannot be resolved reliably outside the image (archive with --xattrs, or "
                         "numeric ids)")
    return _NAMED[tag], int(number), perms


def _perms(text: str, entry: str) -> int:
    bits = {"r": 4, "w": 2, "x": 1}
    value = 0
    for char in text:
        if char == "-":
            continue
        if char not in bits or value & bits[char]:
            raise ValueError(f"ACL entry {entry!r}: permissions {text!r} are not like r-x")
        value |= bits[char]
    if not text or len(text) > 3:
        raise ValueError(f"ACL entry {entry!r}: permissions {text!r} are not like r-x")
    return value


def decode(blob: bytes) -> str:
    """The text form (``user::rwx,user:1000:r-x,...``, ids numeric) of an ACL in the kernel's binary form."""
    if len(blob) < _HEADER.size or (len(blob) - _HEADER.size) % _ENTRY.size:
        raise ValueError(f"a binary ACL of {len(blob)} bytes is not 4 + 8 * entries")
    (version,) = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise ValueError(f"a binary ACL of version {version}; expected {VERSION}")
    out = []
    for tag, perms, qualifier in _ENTRY.iter_unpack(blob[_HEADER.size:]):
        if tag not in _NAMES or perms > 7:
            raise ValueError(f"a binary ACL entry with tag {tag:#x} and permissions {perms:#x}")
        who = str(qualifier) if tag in (USER, GROUP) else ""
        rwx = "".join(char if perms & bit else "-" for char, bit in (("r", 4), ("w", 2), ("x", 1)))
        out.append(f"{_NAMES[tag]}:{who}:{rwx}")
    return ",".join(out)
