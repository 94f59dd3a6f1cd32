"""Benchmark: applying a file image into a directory, against `tar -x` of the same content, in one run.

The tree is synthetic and seeded (the same every time): directories of files whose sizes follow a
root filesystem's shape (most a few KiB, some hundreds of KiB, a few MiB), random and text-like
contents, some symlinks and hard links. It is built once into build/bench-apply, as a peagent file
image (``peagent image build --files``, default options) and as a pax tar compressed by ``zstd -3``,
both served by nginx on loopback. Each run extracts the whole tree into a fresh directory on the
real disk, three ways:

* ``peagent``: ``peagent apply URL/images/tree DIR`` (every frame verified, confined extraction);
* ``pipeline``: ``curl -s URL/tree.tar.zst | zstd -dc | tar -x --xattrs --acls -C DIR``;
* ``tar local``: ``tar -x --xattrs --acls -f tree.tar -C DIR`` from an uncompressed tar already in
  the page cache: extraction alone, the floor.

Each timed run goes from the command's start to the data durable (``sync -f`` of the target's
filesystem included). Before each: the target removed, ``sync``, caches dropped, the served
files and the tools' code read again (bench.transfer.cold_start, plus the modules ``peagent
apply`` imports, which cold_start's list leaves out: in the PE they are in RAM like the rest).
The CPU seconds (user + system) each way took are recorded beside the wall time: peagent also
checks every frame's sha256, which the pipeline does not, and on 2 shared vCPUs that work is
paid for in wall time. The applied tree is compared with the source (paths, sizes, contents)
after every run. Goal: peagent >= 0.9 x the pipeline's rate (the issue's "against tar -x of the
same content"); the local tar is reported as the floor.

    sudo .venv/bin/python -m bench.apply [--runs 3] [--files 20000] [--rebuild]

Results: bench/results/apply.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
from pathlib import Path

from bench.transfer import MIB, ROOT, cold_start, run, span, summary, timed
from tests.support.nginx import Nginx

RESULTS = ROOT / "bench" / "results" / "apply.json"
PEAGENT = str(ROOT / ".venv" / "bin" / "peagent")


def make_tree(root: Path, files: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    made: list[Path] = []
    for i in range(files):
        d = root / f"d{i % 97:02d}" / f"s{i % 13}"
        d.mkdir(parents=True, exist_ok=True)
        r = rng.random()
        size = rng.randint(200, 16 << 10) if r < 0.85 else rng.randint(16 << 10, 512 << 10) if r < 0.99 \
            else rng.randint(1 << 20, 4 << 20)
        if rng.random() < 0.5:
            data = rng.randbytes(size)
        else:
            data = (b" ".join(rng.choice(words) for _ in range(size // 5 + 1)))[:size]
        path = d / f"f{i}.dat"
        path.write_bytes(data)
        made.append(path)
        if i % 50 == 0:
            os.symlink(f"f{i}.dat", d / f"l{i}")
        if i % 200 == 0 and made:
            os.link(rng.choice(made), d / f"h{i}")


def warm_apply() -> None:
    """Read the code ``peagent apply`` runs (cold_start warms the disk-imaging modules only)."""
    run([str(ROOT / ".venv" / "bin" / "python"), "-c", "import peagent.cli, peagent.files.stack"])


def children_cpu() -> float:
    """CPU seconds (user + system) of every child process waited for so far, their children included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_sum(root: Path) -> tuple[int, int, str]:
    """(entries, file bytes, a digest of every path, size and content)."""
    h = hashlib.sha256()
    entries = size = 0
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            entries += 1
            h.update(str(path.relative_to(root)).encode())
            if path.is_symlink():
                h.update(os.readlink(path).encode())
            else:
                data = path.read_bytes()
                size += len(data)
                h.update(hashlib.sha256(data).digest())
        entries += len(dirnames)
    return entries, size, h.hexdigest()


class Inputs:
    def __init__(self, work: Path, files: int, rebuild: bool) -> None:
        self.work, self.dp = work, work / "dp"
        self.tree = work / "tree"
        if rebuild:
            shutil.rmtree(work, ignore_errors=True)
        if not (self.dp / "images" / "tree" / "manifest.json").exists():
            shutil.rmtree(work, ignore_errors=True)
            (self.dp / "images").mkdir(parents=True)
            make_tree(self.tree, files)
            run([PEAGENT, "keys", "-o", str(work / "keys")])
            run([PEAGENT, "image", "build", "--files", str(self.tree), "-o", str(self.dp / "images" / "tree"),
                 "--name", "tree", "--version", "1", "--key", str(work / "keys" / "peagent.key")])
            run(f"tar --format=pax --xattrs --acls -cf {work}/tree.tar -C {self.tree} . && "
                f"zstd -q -3 -T0 -f {work}/tree.tar -o {self.dp}/tree.tar.zst")
            for path in [self.dp, *self.dp.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
        self.entries, self.bytes, self.digest = tree_sum(self.tree)
        self.pub = str(work / "keys" / "peagent.pub")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-apply")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    inputs = Inputs(args.work, args.files, args.rebuild)
    target = args.work / "target"
    served = [*(inputs.dp / "images" / "tree").iterdir(), inputs.dp / "tree.tar.zst"]
    samples: dict[str, list[float]] = {"peagent": [], "pipeline": [], "tar local": []}
    cpu: dict[str, list[float]] = {name: [] for name in samples}
    with Nginx(inputs.dp) as dp:
        ways = {
            "peagent": f"{PEAGENT} apply {dp.url}images/tree {target} --key {inputs.pub}",
            "pipeline": f"curl -sf {dp.url}tree.tar.zst | zstd -dc | tar -x --xattrs --acls -C {target}",
            "tar local": f"tar -x --xattrs --acls -f {args.work}/tree.tar -C {target}",
        }
        for r in range(args.runs):
            for name, command in ways.items():
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
                cold_start(*served, *([args.work / "tree.tar"] if name == "tar local" else []))
                warm_apply()
                used = children_cpu()
                seconds, _ = timed(["bash", "-c", f"set -o pipefail; {command} && sync -f {target}"])
                used = children_cpu() - used
                assert tree_sum(target)[2] == inputs.digest, f"{name}: the applied tree differs"
                samples[name].append(seconds)
                cpu[name].append(used)
                print(f"apply {name} run {r + 1}: {seconds:.2f} s, {used:.2f} CPU s", flush=True)
    shutil.rmtree(target, ignore_errors=True)
    stats = {name: summary(values) for name, values in samples.items()}
    cpu_stats = {name: summary(values) for name, values in cpu.items()}
    ratio = statistics.median(samples["pipeline"]) / statistics.median(samples["peagent"])
    results = {"tree": {"entries": inputs.entries, "bytes": inputs.bytes}, "seconds": stats,
               "cpu_seconds": cpu_stats, "peagent_rate_over_pipeline": round(ratio, 2),
               "goal": {"limit": 0.9, "met": ratio >= 0.9}}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nTree: {inputs.entries} entries, {inputs.bytes / MIB:.0f} MiB of file data; seconds, median (range)\n")
    print("| way | seconds | MiB/s | entries/s | CPU seconds |\n|---|---|---|---|---|")
    for name, s in stats.items():
        med = s["median"]
        print(f"| {name} | {span(s)} | {inputs.bytes / MIB / med:.0f} | {inputs.entries / med:.0f} | "
              f"{span(cpu_stats[name])} |")
    print(f"\npeagent's rate / the pipeline's: {ratio:.2f} (goal >= 0.9: {'met' if ratio >= 0.9 else 'not met'})")


if __name__ == "__main__":
    main()
