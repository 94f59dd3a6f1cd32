"""Benchmark: seconds per erase mode on a 4 GiB loop device, verification included.

The loop device sits on a sparse file on the real disk (under build/, never tmpfs), filled with a
non-zero pattern, with a GPT, ext4, LVM, bcache and MD signatures on four partitions, as a disk
coming back for redeployment would be. Each run: fill, then ``metadata``, then ``discard`` (the
data is still there after a metadata erase); fill, ``zero``; fill, then the zero fallback (4 MiB
writes of zeroes, what a device that refuses BLKZEROOUT gets; timed without the verification).
The fill itself is timed too: it is the backing disk's sequential write speed, the yardstick for
everything else.

What the figures mean: on a loop device, BLKDISCARD punches holes in the backing file and
BLKZEROOUT becomes fallocate(ZERO_RANGE); both are extent operations of the backing filesystem,
not disk writes, so they stand for a disk that offloads discard and write-zeroes (most SSDs and
NVMe drives do). The write fallback is bounded by the disk's write speed, like a disk without
offload. Secure erase only runs on real drives or QEMU (tests/vm/test_erase.py).

    .venv/bin/python -m bench.erase [--runs 3] [--size-gib 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from peagent.disk.capabilities import probe
from peagent.disk.erase import EraseSpec, erase, zero_range
from tests.integration.test_erase import md_superblock, pvcreate

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "bench-erase"
MIB = 1 << 20
PATTERN = bytes(range(1, 256)) * (4 * MIB // 255 + 1)
MODES = ["metadata", "discard", "zero", "zero-write"]


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def fill(dev: str, size: int) -> float:
    """Write the pattern over the whole device; returns MiB/s."""
    started = time.monotonic()
    fd = os.open(dev, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for offset in range(0, size, 4 * MIB):
            os.pwrite(fd, PATTERN[:4 * MIB], offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size / MIB / (time.monotonic() - started)


def old_os(dev: str, size: int) -> None:
    """A GPT with ext4, LVM, bcache and MD partitions, as the disk of a machine being redeployed."""
    part = size // 4 // MIB - 2
    run("sgdisk", "--zap-all", dev)
    run("sgdisk", f"-n1:1M:+{part}M", f"-n2:0:+{part}M", f"-n3:0:+{part}M", f"-n4:0:+{part}M", dev)
    run("partx", "--update", dev)
    run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", f"{dev}p1")
    pvcreate(f"{dev}p2")
    run("make-bcache", "-B", f"{dev}p3")
    md_superblock(f"{dev}p4", "1.2")


def timed_erase(dev: str, mode: str, size: int) -> dict:
    caps = probe(dev, f"/sys/class/block/{os.path.basename(dev)}")
    if mode == "zero-write":
        started = time.monotonic()
        fd = os.open(dev, os.O_RDWR | os.O_EXCL | os.O_CLOEXEC)
        try:
            how = zero_range(fd, 0, size, offload=False)
            os.fsync(fd)
        finally:
            os.close(fd)
        return {"seconds": round(time.monotonic() - started, 3), "bytes": size, "method": how}
    report = erase(dev, EraseSpec(mode), caps)
    return {"seconds": report.seconds, "bytes": report.bytes, "method": report.method}


def fs_type(path: Path) -> str:
    return run("findmnt", "-n", "-o", "FSTYPE", "-T", str(path)).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-gib", type=int, default=4)
    args = parser.parse_args()
    size = args.size_gib << 30
    WORK.mkdir(parents=True, exist_ok=True)
    backing = WORK / "disk.img"
    fstype = fs_type(WORK)
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{WORK} is on {fstype}: the benchmark needs a real disk")
    with backing.open("wb") as f:
        f.truncate(size)
    dev = run("losetup", "--find", "--show", "--partscan", str(backing)).strip()
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    fills: list[float] = []
    try:
        for n in range(args.runs):
            fills.append(fill(dev, size))
            for mode in MODES:
                if mode in ("zero", "zero-write"):
                    fills.append(fill(dev, size))
                old_os(dev, size)
                results[mode].append(timed_erase(dev, mode, size))
                print(f"run {n + 1} {mode}: {results[mode][-1]}", flush=True)
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)
        backing.unlink(missing_ok=True)

    modes = {}
    for mode, samples in results.items():
        secs = [s["seconds"] for s in samples]
        modes[mode] = {"samples": samples, "median_s": statistics.median(secs), "min_s": min(secs),
                       "max_s": max(secs), "bytes": samples[0]["bytes"], "method": samples[-1]["method"]}
    out = {"when": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "kernel": platform.release(),
           "device": f"loop device over a sparse file on {fstype} ({args.size_gib} GiB)", "runs": args.runs,
           "fill_mib_s": {"samples": [round(f) for f in fills], "median": round(statistics.median(fills))},
           "modes": modes}
    path = ROOT / "bench" / "results" / "erase.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print()
    print(table(out))
    print(f"\nwritten to {path}")
    return 0


def table(out: dict) -> str:
    lines = [f"{out['device']}, {out['runs']} runs; filling it with the pattern (sequential writes): "
             f"{out['fill_mib_s']['median']} MiB/s median", "",
             "| mode | seconds (median, min-max) | bytes erased | GiB/s | method |", "|---|---|---|---|---|"]
    for mode, m in out["modes"].items():
        # metadata mode zeroes a few regions: a rate over them says nothing
        rate = f"{m['bytes'] / (1 << 30) / m['median_s']:.1f}" if mode != "metadata" and m["median_s"] else "-"
        lines.append(f"| {mode} | {m['median_s']:.2f} ({m['min_s']:.2f}-{m['max_s']:.2f}) | {m['bytes']:,} | "
                     f"{rate} | {m['method']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
