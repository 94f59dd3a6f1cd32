"""What a tar entry's headers say about a file beyond its data: owner, mode, times, xattrs, ACLs.

The ustar header holds a numeric uid and gid, the mode and an mtime in whole seconds; pax
records add the rest, and these are the ones read here:

* ``mtime`` and ``atime``: decimal seconds, to the nanosecond (``1700000000.123456789``). They
  are read from the record's text, exactly (a float would lose the last digits).
* ``SCHILY.xattr.NAME``: extended attribute NAME with its raw bytes as the value (GNU tar
  ``--xattrs``, star, libarchive). Names in ``user.``, ``trusted.`` and ``security.`` are kept
  (``security.selinux``, ``security.capability``...), and the two POSIX ACL names; other
  ``system.`` names are specific to a filesystem or not attributes at all, and are skipped with
  a warning.
* ``SCHILY.acl.access`` and ``SCHILY.acl.default``: ACLs in text form, encoded for the kernel
  by peagent.files.acl, unless the same ACL is also there in binary form as an xattr (GNU tar
  with ``--xattrs --acls`` writes both; the binary one has numeric ids, the text one names).
* ``RHT.security.selinux``: the SELinux label written by GNU tar ``--selinux``.

User and group *names* are ignored: owners are numeric, as they are in the image.
"""

from __future__ import annotations

import logging
import re
from typing import NamedTuple

from peagent.files import acl
from peagent.files.tarheader import Member

log = logging.getLogger(__name__)

XATTR = "SCHILY.xattr."
ACL_TEXT = {"SCHILY.acl.access": acl.ACCESS, "SCHILY.acl.default": acl.DEFAULT}
SELINUX = "RHT.security.selinux"
KEPT_NAMESPACES = ("user.", "trusted.", "security.")
NO_ID = 0xFFFFFFFF  # chown's "leave it": not an owner an archive may set
_TIME = re.compile(r"(-?)(\d+)(?:\.(\d*))?")
_ATTRIBUTES = (XATTR, "SCHILY.acl.", SELINUX)  # the records _xattrs reads


class MetaError(ValueError):
    """An entry's metadata is malformed; the message says which field and what it holds."""


class Meta(NamedTuple):  # a tuple: made once per entry, and that is the cheapest immutable record
    mode: int  # permission bits with setuid, setgid and sticky
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    xattrs: tuple[tuple[str, bytes], ...]  # in the order to set them: file capabilities last

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self.xattrs}


def metadata(member: Member) -> Meta:
    uid, gid = member.uid, member.gid
    if not (0 <= uid < NO_ID and 0 <= gid < NO_ID):
        field, value = ("uid", uid) if not 0 <= uid < NO_ID else ("gid", gid)
        raise MetaError(f"its {field} {value} is not a valid owner")
    pax = member.pax_headers
    if not pax:  # a plain ustar header: whole seconds
        mtime = _ns(str(member.mtime), "mtime")
        return Meta(member.mode & 0o7777, uid, gid, mtime, mtime, ())
    mtime = _ns(pax.get("mtime", str(member.mtime)), "mtime")
    atime = _ns(pax["atime"], "atime") if "atime" in pax else mtime
    return Meta(member.mode & 0o7777, uid, gid, atime, mtime, _xattrs(pax))


def _ns(text: str, field: str) -> int:
    """Nanoseconds from pax's decimal seconds (more than 9 decimals are cut, as GNU tar does)."""
    whole, _, fraction = text.partition(".")
    if whole.isdigit() and whole.isascii() and (not fraction or (fraction.isdigit() and fraction.isascii())):
        ns = int(whole) * 1_000_000_000 + int(fraction[:9].ljust(9, "0"))  # the usual "1700000000.123456789"
        if ns < 1 << 63:
            return ns
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise MetaError(f"its {field} {text!r} is not a decimal number of seconds")
    sign, whole, fraction = match.groups()
    ns = int(whole) * 1_000_000_000 + int((fraction or "").ljust(9, "0")[:9])
    if ns >= 1 << 63:  # what the kernel's timestamps hold (base-256 header fields can hold more)
        raise MetaError(f"its {field} {text!r} is out of range")
    return -ns if sign else ns


def _xattrs(pax: dict[str, str]) -> tuple[tuple[str, bytes], ...]:
    for key in pax:  # most entries carry times only: done without building anything
        if key.startswith(_ATTRIBUTES):
            break
    else:
        return ()
    found: dict[str, bytes] = {}
    for key, value in pax.items():
        if not key.startswith(XATTR):
            continue
        name = key[len(XATTR):]
        raw = value.encode("utf-8", "surrogateescape")  # the reader decoded the bytes this way: back, exactly
        if name in (acl.ACCESS, acl.DEFAULT):
            try:
                acl.decode(raw)  # the kernel checks it too; this says which entry and what is wrong
            except ValueError as exc:
                raise MetaError(f"its xattr {name}: {exc}") from None
        elif not name.startswith(KEPT_NAMESPACES):
            log.warning("skipping the extended attribute %r: peagent applies only user.*, trusted.*, "
                        "security.* and POSIX ACLs", name)
            continue
        found[name] = raw
    for key, name in ACL_TEXT.items():
        text = pax.get(key, "")
        if text.strip() and name not in found:
            try:
                found[name] = acl.encode(text)
            except ValueError as exc:
                raise MetaError(f"its {key}: {exc}") from None
    if SELINUX in pax and "security.selinux" not in found:
        label = pax[SELINUX].encode("utf-8", "surrogateescape")
        found["security.selinux"] = label if label.endswith(b"\0") else label + b"\0"  # as setfilecon stores it
    return tuple(sorted(found.items(), key=lambda item: item[0] == "security.capability"))
