"""Which OS a partition holds, found by looking into it, and which partition to re-image.

:func:`identify` reads a mounted tree and never trusts it: every path is walked with ``lstat``
and a symlink is not followed (an old OS's ``etc/os-release -> /usr/lib/os-release`` would
otherwise be the PE's own file), and only small regular files are read.

* Linux: ``etc/os-release``, else ``usr/lib/os-release`` (freedesktop os-release: shell-quoted
  ``KEY=value`` lines); the OS is its ``PRETTY_NAME`` (else ``NAME VERSION_ID``).
* Windows: ``Windows/System32/config/SYSTEM`` that starts as a registry hive does (``regf``),
  names matched without regard to case as Windows does. Which Windows it is (the version, the
  computer name) is the machine-state capture's to read from the hives.
* A partition an interrupted in-place re-image left behind (its marker file) is found as such,
  so that a rerun can resume.

:func:`survey` mounts each candidate partition read-only to identify it; :func:`choose` (pure)
picks the one to re-image or refuses, naming what each partition held.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from peagent.disk.mount import mounted
from peagent.errors import FilesystemError, InplaceError, UnknownOSError
from peagent.inplace.spec import InplaceSpec
from peagent.inventory import Partition

T = TypeVar("T")
MARKER = ".peagent-inplace.json"  # at the root of a partition being re-imaged in place
SMALL = 64 * 1024  # bytes: os-release, the marker; more is not what we look for
OS_FILESYSTEMS = ("ext4", "ext3", "ext2", "xfs", "btrfs", "ntfs")


@dataclass(frozen=True)
class FoundOS:
    kind: str  # "linux", "windows" or "unknown"
    name: str  # "Debian GNU/Linux 12 (bookworm)", "Windows"; for unknown, what the root holds
    evidence: str  # the file that told ("etc/os-release"), or "" for unknown
    resuming: str | None = None  # the deployment id of an interrupted re-image found there

    def describe(self) -> str:
        if self.resuming is not None:
            return f"an interrupted in-place re-image by deployment {self.resuming} (was {self.name})"
        return f"{self.name} ({self.evidence})" if self.kind != "unknown" else f"no known OS ({self.name})"


@dataclass(frozen=True)
class Surveyed:
    partition: Partition
    os: FoundOS | None  # None: it could not be looked into (``problem`` says why)
    problem: str = ""

    def describe(self) -> str:
        what = self.os.describe() if self.os is not None else f"not readable: {self.problem}"
        return f"partition {self.partition.number} ({self.partition.fstype}): {what}"


def identify(root: Path) -> FoundOS:
    """What the tree at ``root`` (a mounted filesystem) holds."""
    marker = read_small(root, MARKER)
    if marker is not None:
        try:
            state = json.loads(marker)
            return FoundOS(kind=str(state["os"]["kind"]), name=str(state["os"]["name"]), evidence=MARKER,
                           resuming=str(state["deployment_id"]))
        except (ValueError, KeyError, TypeError):
            pass  # not ours after all: look at the tree as it is
    for rel in ("etc/os-release", "usr/lib/os-release"):
        text = read_small(root, rel)
        if text is not None:
            fields = _os_release(text.decode("utf-8", "replace"))
            name = fields.get("PRETTY_NAME") or " ".join(
                v for v in (fields.get("NAME", "Linux"), fields.get("VERSION_ID", "")) if v)
            return FoundOS(kind="linux", name=name, evidence=rel)
    hive = read_small(root, "Windows/System32/config/SYSTEM", head=4, nocase=True)
    if hive == b"regf":
        return FoundOS(kind="windows", name="Windows", evidence="Windows/System32/config/SYSTEM")
    names = sorted(os.listdir(root))
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return FoundOS(kind="unknown", name=f"top level: {shown}" if names else "empty", evidence="")


def look_into(partitions: Sequence[Partition], look: Callable[[Partition, Path], T],
              parent: Path | None = None) -> list[tuple[Partition, T | None, str]]:
    """``look(partition, root)`` on each partition that could hold an OS, mounted read-only meanwhile:
    (partition, what it returned, ""), or (partition, None, why) when mounting, looking (an OSError)
    or unmounting failed. The one loop behind surveys, captures and deployment-record lookups."""
    found: list[tuple[Partition, T | None, str]] = []
    for p in partitions:
        if p.fstype not in OS_FILESYSTEMS:
            continue
        try:
            with mounted(p.path, p.fstype, readonly=True, parent=parent) as root:
                value = look(p, root)
        except (FilesystemError, OSError) as exc:
            found.append((p, None, str(exc)))
            continue
        found.append((p, value, ""))
    return found


def survey(partitions: Sequence[Partition], parent: Path | None = None) -> list[Surveyed]:
    """Each partition that could hold an OS, mounted read-only and identified."""
    return [Surveyed(p, os_found, problem)
            for p, os_found, problem in look_into(partitions, lambda _, root: identify(root), parent)]


def choose(surveyed: Sequence[Surveyed], spec: InplaceSpec, disk: str, deployment_id: str) -> Surveyed:
    """The partition to re-image in place, or the error that says why none can be chosen safely."""
    listing = "; ".join(s.describe() for s in surveyed) or "no partition with a filesystem an OS lives on"
    if spec.partition is not None:
        named = [s for s in surveyed if spec.partition.matches(s.partition)]
        if not named:
            raise InplaceError(f"target.inplace.partition ({spec.partition.key} {spec.partition.value!r}) is not "
                               f"a partition of {disk} that could hold an OS; found: {listing}")
        chosen = named[0]
        if chosen.os is None:
            raise InplaceError(f"{chosen.describe()}; nothing was changed")
        _check_resume(chosen, spec, deployment_id)
        if chosen.os.kind == "unknown" and not spec.force:
            raise UnknownOSError(f"{chosen.describe()} on {disk}: refusing to delete what it holds; set "
                                 "target.inplace.force to true to re-image it anyway (the Linux policy then "
                                 "applies: everything but home, srv and the keeps is deleted)")
        return chosen
    with_os = [s for s in surveyed if s.os is not None and s.os.kind != "unknown"]
    if not with_os:
        raise UnknownOSError(f"no partition of {disk} holds an OS peagent recognises; found: {listing}. Name "
                             "the partition (target.inplace.partition) and set target.inplace.force to re-image "
                             "it anyway")
    if len(with_os) > 1:
        raise InplaceError(f"{disk} holds {len(with_os)} operating systems ({listing}): name the one to re-image "
                           "with target.inplace.partition")
    _check_resume(with_os[0], spec, deployment_id)
    return with_os[0]


def _check_resume(chosen: Surveyed, spec: InplaceSpec, deployment_id: str) -> None:
    found = chosen.os
    assert found is not None
    if found.resuming is not None and found.resuming != deployment_id and not spec.force:
        raise InplaceError(f"{chosen.describe()}: its OS is partly deleted. Rerun deployment {found.resuming} "
                           "to finish it, or name the partition and set target.inplace.force to re-image it "
                           "under this deployment")


def _os_release(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#") or not key.isidentifier():
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value.strip("\"'")]
        fields[key] = " ".join(words)
    return fields


def read_small(root: Path, rel: str, *, head: int | None = None, nocase: bool = False,
               limit: int = SMALL) -> bytes | None:
    """The regular file ``rel`` under ``root`` (its first ``head`` bytes when given), reached without
    following a symlink; None when it is not there, not a regular file, or whole and bigger than ``limit``."""
    here = root
    for i, name in enumerate(rel.split("/")):
        if nocase:
            try:
                matches = [n for n in os.listdir(here) if n.lower() == name.lower()]
            except OSError:
                return None
            if not matches:
                return None
            name = sorted(matches)[0]
        here = here / name
        try:
            st = os.lstat(here)
        except OSError:
            return None
        last = i == rel.count("/")
        if not (stat.S_ISREG(st.st_mode) if last else stat.S_ISDIR(st.st_mode)):
            return None
    if head is None and st.st_size > limit:
        return None
    try:
        fd = os.open(here, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit if head is None else head)
    finally:
        os.close(fd)
