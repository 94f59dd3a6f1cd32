"""Reading an erased disk back: no signature, no partition, and the data as the mode promises.

Every read goes to the device rather than the page cache (O_DIRECT). :func:`_verify` checks what
:func:`~peagent.disk.erase.decide.expected_data` says the mode guarantees: zeroed regions and
samples that read as zeroes (:func:`nonzero_blocks`), or sampled blocks that no longer hold what
they held before the erase (:func:`unchanged_blocks`, against fingerprints taken before).
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
from collections.abc import Iterator

from peagent.disk.erase.decide import MIB, Expectation, _human
from peagent.disk.erase.device import _Disk, _tool, partitions_of
from peagent.disk.erase.spec import EraseSpec
from peagent.disk.tools import NOT_INSTALLED, Runner
from peagent.errors import EraseError, EraseVerifyError

READ_CHUNK = 1 * MIB
CHECK_BLOCK = 4096  # granularity of the "changed" comparison
_ZEROS = bytes(READ_CHUNK)


def _verify(disk: _Disk, spec: EraseSpec, expect: Expectation, zeroed: list[tuple[int, int]],
            samples: list[tuple[int, int]], before: dict[int, bytes], runner: Runner,
            notes: list[str]) -> list[str]:
    verified = []
    found = signatures(disk.path, runner)
    if found:
        raise EraseVerifyError(f"{spec.mode}: signatures remain on {disk.path} after the erase: "
                               f"{', '.join(found)}")
    verified.append(f"blkid -p and wipefs find no signature on {disk.path}")
    if disk.sys_dir is not None:
        left = partitions_of(disk.sys_dir)
        if left:
            raise EraseVerifyError(f"{spec.mode}: the kernel still lists partitions of {disk.path} "
                                   f"after the erase: {', '.join(p.node for p in left)}")
        verified.append("the kernel lists no partition")
    if zeroed:
        bad = nonzero_blocks(disk.path, zeroed)
        if bad:
            raise EraseVerifyError(f"{spec.mode}: {len(bad)} block(s) of the zeroed regions of {disk.path} "
                                   f"are not zero (first at byte {bad[0]})")
        verified.append(f"the {len(zeroed)} zeroed region(s) ({_human(sum(n for _, n in zeroed))}: MBR, "
                        "both GPT headers and tables, superblocks at the ends) read back as zeroes")
    total = _human(sum(n for _, n in samples))
    if expect.data == "zero":
        bad = nonzero_blocks(disk.path, samples)
        if bad:
            raise EraseVerifyError(f"{spec.mode}: {len(bad)} sampled 4 KiB block(s) of {disk.path} are "
                                   f"not zero after the erase (first at byte {bad[0]}); expected zeroes "
                                   f"because {expect.why}")
        verified.append(f"the samples ({total}: {spec.samples} blocks of 64 KiB spread over the disk, "
                        "the first and last MiB) read as zeroes")
    elif expect.data == "changed":
        same, held = unchanged_blocks(disk.path, samples, before)
        if not held:
            notes.append("no sampled block held data before the erase: the read-back could not show a change")
        if same:
            raise EraseVerifyError(f"{spec.mode}: {len(same)} of the {held} sampled 4 KiB blocks of "
                                   f"{disk.path} that held data still hold the same data after the "
                                   f"erase (first at byte {same[0]})")
        verified.append(f"every sampled 4 KiB block that held data before now reads differently ({held} "
                        f"blocks, of {total} sampled; {expect.why})")
    else:
        notes.append(f"data not verified: {expect.why}")
    return verified


def signatures(device: str, runner: Runner) -> list[str]:
    """Signatures that wipefs or ``blkid -p`` still find on ``device`` (empty: none)."""
    found = []
    result = _tool(runner, ["wipefs", "--json", device], f"listing signatures on {device}")
    if result.stdout.strip():
        try:
            rows = json.loads(result.stdout).get("signatures", [])
        except (json.JSONDecodeError, AttributeError):
            raise EraseError(f"wipefs --json {device} printed something unexpected") from None
        found += [f"{r.get('type')} at {r.get('offset')} (wipefs)" for r in rows]
    probe = runner(["blkid", "-p", "-o", "export", device], timeout=60)
    if probe.returncode == NOT_INSTALLED:
        raise EraseError("checking for signatures: blkid is not installed in this PE")
    if probe.returncode != 2:  # blkid: 2 means nothing was found
        values = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
        kind = values.get("TYPE") or values.get("PTTYPE")
        found.append(f"{kind} (blkid -p)" if kind else f"blkid -p status {probe.returncode}: "
                     f"{(probe.stderr or probe.stdout).strip() or 'ambivalent result'}")
    return found


def _read_regions(path: str, regions: list[tuple[int, int]]) -> Iterator[tuple[int, bytes]]:
    """(offset, data) of every region, READ_CHUNK at a time, from the device rather than the page
    cache (O_DIRECT, into a page-aligned buffer), or buffered where O_DIRECT is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
        direct = True
    except OSError:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        direct = False
    buf = mmap.mmap(-1, READ_CHUNK)
    view = memoryview(buf)
    try:
        if not direct:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for offset, length in regions:
            pos = offset
            while pos < offset + length:
                n = min(READ_CHUNK, offset + length - pos)
                try:
                    got = os.preadv(fd, [view[:n]], pos)
                except OSError as exc:
                    if not (direct and exc.errno == errno.EINVAL):
                        raise EraseVerifyError(f"reading {path} back at byte {pos}: {exc.strerror}") from None
                    # O_DIRECT wants another alignment here: read through the (dropped) cache instead.
                    os.close(fd)
                    fd, direct = os.open(path, os.O_RDONLY | os.O_CLOEXEC), False
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    continue
                if got != n:
                    raise EraseVerifyError(f"reading {path} back at byte {pos}: {got} of {n} bytes")
                yield pos, bytes(view[:n])
                pos += n
    finally:
        view.release()
        buf.close()
        os.close(fd)


def nonzero_blocks(path: str, regions: list[tuple[int, int]]) -> list[int]:
    """Offsets of the 4 KiB blocks in ``regions`` that are not all zero."""
    bad = []
    for offset, data in _read_regions(path, regions):
        if data != _ZEROS[:len(data)]:
            bad += [offset + i for i in range(0, len(data), CHECK_BLOCK)
                    if data[i:i + CHECK_BLOCK] != _ZEROS[:len(data[i:i + CHECK_BLOCK])]]
    return bad


def _fingerprint(path: str, regions: list[tuple[int, int]]) -> dict[int, bytes]:
    """offset -> digest of every 4 KiB block in ``regions`` that holds data (zero blocks omitted)."""
    prints = {}
    for offset, data in _read_regions(path, regions):
        for i in range(0, len(data), CHECK_BLOCK):
            block = data[i:i + CHECK_BLOCK]
            if block != _ZEROS[:len(block)]:
                prints[offset + i] = hashlib.blake2b(block, digest_size=16).digest()
    return prints


def unchanged_blocks(path: str, regions: list[tuple[int, int]],
                     before: dict[int, bytes]) -> tuple[list[int], int]:
    """Blocks that held data before (``before``, from :func:`_fingerprint`) and still hold the same
    data; and how many held data."""
    after = _fingerprint(path, regions)
    same = sorted(offset for offset, digest in before.items() if after.get(offset) == digest)
    return same, len(before)
