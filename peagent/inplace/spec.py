"""The task's ``target.inplace``: which partition to re-image in place, what to keep, and when to force.

::

    "target": {
      "hints": {"serial": "S3Z9NB0K"},
      "inplace": {
        "partition": {"label": "root"},        # optional: else the one partition holding an OS
        "keep": ["opt/data", "var/lib/pgsql"], # kept besides the OS's policy (home, srv / Users, ...)
        "force": false,                        # re-image a partition whose OS is not recognised
        "headroom": "256MiB"                   # free space the new OS must have left once laid down
      }
    }

Kept paths are relative to the partition's root, plainly (no ``..``, no leading ``/``, as the
user would write them after the root: ``opt/data``). ``force`` needs ``partition``: forcing is
a decision about one partition, never about whichever the survey happens to find.
"""

from __future__ import annotations

from dataclasses import dataclass

from peagent.disk.layout.spec import Keep, parse_bytes, parse_partition_ref
from peagent.errors import TaskError, describe
from peagent.schema import Fields

HEADROOM = 256 << 20  # bytes: a system that boots into a full disk does not get far


@dataclass(frozen=True)
class InplaceSpec:
    partition: Keep | None = None  # None: the one partition that holds an OS
    keep: tuple[str, ...] = ()  # paths relative to the partition's root, normalised ("opt/data")
    force: bool = False
    headroom: int = HEADROOM  # bytes left free after the new OS is laid down (peagent.inplace.space)


def parse_inplace(obj: object, field: str) -> InplaceSpec:
    f = Fields(obj, field)
    ref = f.get("partition", dict, 'a partition: {"number": N}, {"label": ...} or {"uuid": ...}', None)
    keeps = f.get("keep", list, 'a list of paths to keep, relative to the partition\'s root ("opt/data")', [])
    force = f.get("force", bool, "true or false", False)
    headroom = f.get("headroom", str, 'a size, like "256MiB" or "1GiB"', None)
    f.done()
    partition = None if ref is None else parse_partition_ref(ref, f"{field}.partition", 0)
    if force and partition is None:
        raise TaskError(f"{field}.partition", "the partition to force (force applies to a named partition only)",
                        "nothing")
    return InplaceSpec(partition=partition, keep=tuple(_path(k, f"{field}.keep[{i}]") for i, k in enumerate(keeps)),
                       force=force, headroom=HEADROOM if headroom is None else parse_bytes(headroom,
                                                                                           f"{field}.headroom"))


def _path(value: object, field: str) -> str:
    expected = 'a path relative to the partition\'s root, like "opt/data" (no "..", no NUL)'
    if not isinstance(value, str):
        raise TaskError(field, expected, describe(value))
    parts = [p for p in value.strip("/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or "\0" in value:
        raise TaskError(field, expected, describe(value))
    return "/".join(parts)
