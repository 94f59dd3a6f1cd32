"""Benchmark: an in-place re-image of a 2 GiB Linux root beside 1 GiB of user data.

A sparse 8 GiB disk (a loop device) gets one ext4 partition holding an "old OS" (a 2 GiB
synthetic root, bench.apply's tree shape, with os-release and fstab) and 1 GiB of user data in
home and srv (photo-like random files, a few hundred KiB to 40 MiB). The new OS is another
2 GiB tree, built once into a peagent file image (default options) served by nginx on loopback.
A timed run does what the PE does (peagent.deploy's in-place path, minus the PE): load the image,
look into the partition (read-only mount), measure the room, delete the old OS, apply the new one
(every frame verified), rewrite fstab, unmount; from its start to the filesystem unmounted
(written back). Before each run the disk is made again, caches dropped, the served files read
(bench.transfer.cold_start). After it: the user data byte-identical (sha256 of every file, and
owners, modes, mtimes), the new OS tree equal to its source, the bytes fetched from the DP.

    sudo .venv/bin/python -m bench.inplace [--runs 3] [--rebuild]

Results: bench/results/inplace.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

from bench.apply import make_tree, tree_sum
from bench.transfer import MIB, ROOT, cold_start, run, summary
from peagent.files.stack import load_stack
from peagent.image.sign import trusted_keys
from peagent.inplace.detect import choose, survey
from peagent.inplace.reimage import reimage
from peagent.inplace.spec import InplaceSpec
from tests.support.blockdev import inspect, mounted
from tests.support.nginx import Nginx

RESULTS = ROOT / "bench" / "results" / "inplace.json"
PEAGENT = str(ROOT / ".venv" / "bin" / "peagent")
GIB = 1 << 30
ROOT_FILES = 30000  # about 2 GiB in bench.apply's shape
DISK = 8 * GIB


class Inputs:
    def __init__(self, work: Path, rebuild: bool) -> None:
        self.work, self.dp = work, work / "dp"
        self.old, self.new = work / "old-os", work / "new-os"
        if rebuild or not (self.dp / "images" / "new-os" / "manifest.json").exists():
            shutil.rmtree(work, ignore_errors=True)
            make_tree(self.old, ROOT_FILES, seed=11)
            (self.old / "etc").mkdir()
            (self.old / "etc/os-release").write_text('PRETTY_NAME="Bench Linux 1"\nID=bench\n')
            (self.old / "etc/fstab").write_text("UUID=old / ext4 defaults 0 1\n")
            make_tree(self.new, ROOT_FILES, seed=12)
            (self.new / "etc").mkdir()
            (self.new / "etc/os-release").write_text('PRETTY_NAME="Bench Linux 2"\nID=bench\n')
            (self.new / "etc/fstab").write_text("UUID=image / ext4 errors=remount-ro 0 1\n")
            (self.new / "home").mkdir()
            (self.new / "srv").mkdir()
            run([PEAGENT, "keys", "-o", str(work / "keys")])
            run([PEAGENT, "image", "build", "--files", str(self.new), "-o", str(self.dp / "images" / "new-os"),
                 "--name", "new-os", "--version", "1", "--key", str(work / "keys" / "peagent.key")])
            for path in [self.dp, *self.dp.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
        self.key = (work / "keys" / "peagent.pub").read_text().strip()
        self.new_sum = tree_sum(self.new)
        self.image_bytes = sum(p.stat().st_size for p in (self.dp / "images" / "new-os").iterdir())


def user_data(root: Path, seed: int = 5) -> None:
    rng = random.Random(seed)
    total, i = 0, 0
    while total < GIB:
        size = min(rng.randint(256 << 10, 40 << 20), GIB - total)
        d = root / ("home/user" if i % 4 else "srv/share") / f"album{i % 9}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"photo{i}.jpg").write_bytes(rng.randbytes(size))
        total += size
        i += 1


def user_digest(root: Path) -> str:
    h = hashlib.sha256()
    for top in ("home", "srv"):
        for path in sorted((root / top).rglob("*")):
            st = path.lstat()
            h.update(f"{path.relative_to(root)} {st.st_uid} {st.st_mode} {st.st_mtime_ns}".encode())
            if path.is_file():
                with path.open("rb") as f:
                    h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


@contextlib.contextmanager
def disk(work: Path, inputs: Inputs) -> Iterator[str]:
    """The loop device of a fresh disk holding the old OS and the user data."""
    backing = work / "disk.img"
    backing.unlink(missing_ok=True)
    with backing.open("wb") as f:
        f.truncate(DISK)
    device = run(["losetup", "--find", "--show", "--partscan", str(backing)]).stdout.strip()
    try:
        run(["sgdisk", "-n1:1M:0", "-t1:8304", device])
        run(["partprobe", device])
        run(["mkfs.ext4", "-q", "-L", "root", f"{device}p1"])
        with mounted(f"{device}p1", work / "mnt") as root:
            run(["cp", "-a", f"{inputs.old}/.", str(root)])
            user_data(root)
        yield device
    finally:
        run(["losetup", "--detach", device])
        backing.unlink(missing_ok=True)


def one_run(work: Path, inputs: Inputs, url: str) -> dict:
    with disk(work, inputs) as device:
        with mounted(f"{device}p1", work / "mnt") as root:
            before = user_digest(root)
        cold_start(*(inputs.dp / "images" / "new-os").iterdir())
        phases: dict[str, float] = {}
        started = time.monotonic()
        stack = load_stack([f"{url}images/new-os"], (), trusted_keys(given=(inputs.key,)), need_base=True)
        target = inspect(device)
        chosen = choose(survey(target.partitions), InplaceSpec(), device, "bench")
        phases["look"] = time.monotonic() - started
        report = reimage(chosen, InplaceSpec(), stack, "bench",
                         emit=lambda phase, message: phases.setdefault(phase, time.monotonic() - started))
        seconds = time.monotonic() - started
        with mounted(f"{device}p1", work / "mnt") as root:
            assert user_digest(root) == before, "the user data changed"
            applied = tree_sum(root)
        fetched = sum(a.fetched for a in report.applied)
    # The new OS tree plus what stayed (home, srv, lost+found) and the rewritten fstab: compare the OS part.
    return {"seconds": seconds, "phases": {k: round(v, 2) for k, v in phases.items()}, "fetched": fetched,
            "deleted": len(report.deletion.delete), "room": vars(report.room) if report.room else None,
            "applied_entries": applied[0], "files": report.applied[0].report.files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-inplace")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    inputs = Inputs(args.work, args.rebuild)
    samples = []
    with Nginx(inputs.dp) as dp:
        for r in range(args.runs):
            result = one_run(args.work, inputs, dp.url)
            samples.append(result)
            print(f"in-place run {r + 1}: {result['seconds']:.1f} s, fetched {result['fetched'] / MIB:.0f} MiB, "
                  f"phases {result['phases']}", flush=True)
    seconds = [s["seconds"] for s in samples]
    results = {"old_os": {"files": ROOT_FILES}, "new_os": {"entries": inputs.new_sum[0], "bytes": inputs.new_sum[1]},
               "user_data_bytes": GIB, "image_bytes": inputs.image_bytes, "seconds": summary(seconds),
               "fetched": [s["fetched"] for s in samples], "runs": samples, "user_data_identical": True}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    med = statistics.median(seconds)
    print(f"\nNew OS: {inputs.new_sum[0]} entries, {inputs.new_sum[1] / MIB:.0f} MiB of file data; image (blob + "
          f"tables) {inputs.image_bytes / MIB:.0f} MiB; user data {GIB / MIB:.0f} MiB, byte-identical after every run")
    print(f"in-place re-image: {med:.1f} s median ({min(seconds):.1f}-{max(seconds):.1f}), "
          f"{statistics.median([s['fetched'] for s in samples]) / MIB:.0f} MiB fetched")
    os.sync()


if __name__ == "__main__":
    main()
