"""Benchmark: issue 4's transfer goals, side by side in one run, from real nginx on loopback.

Everything is served by nginx with the repository's DP server block (tests.support.nginx) from a
directory on the real disk (build/bench-transfer/dp, never tmpfs), and written onto the real disk.
Four parts (``--parts``), each with its goal:

1. ``deploy``: a full deploy of the research's 1 GiB mixed image (tests.support.images.mixed_image,
   seed 1: 1 MiB regions of random, text-like and zero data) into a new file and onto a loop
   device over a new sparse file, three ways:

   * ``peagent``: ``peagent write URL/manifest.json TARGET --key PUB`` of the image built by
     ``peagent image build`` with default options (256 KiB frames, zstd -9);
   * ``pipeline``: ``curl -s URL.zst | zstd -dc | dd of=TARGET bs=4M iflag=fullblock
     conv=sparse,fsync`` of the same raw image compressed by ``zstd -3``;
   * ``bmaptool``: ``bmaptool copy --bmap URL.bmap URL.zst TARGET`` (bmap-tools 3.6; the bmap made
     by ``bmaptool create`` from the sparse raw image).

   Goals: peagent / pipeline <= 0.6 and peagent / bmaptool <= 0.8 (medians). In the same run the
   ceilings of each stage (shared/research/image-transfer.md's recipe): network (``curl -o
   /dev/null`` of the blob), decompression (``zstd -dc`` of the .zst, and python-zstandard
   decompressing the blob's frames, peagent's stage, in 1 thread and one per CPU), sha256 of the
   image's data (1 thread and one per CPU), the verify stage as peagent runs it (decompress and
   sha256 each frame, one thread per CPU), and disk (``dd if=/dev/zero bs=4M oflag=direct
   conv=fsync`` of as many bytes as the image has outside its holes). Goal: peagent >= 90 % of
   the slowest of its three stages (network, verify, disk).

2. ``resume``: peagent through tests.support.faultproxy (bytes counted at the proxy): 0, 5 and 20
   connection resets (RST) at seeded offsets of the blob; goal: extra bytes per reset <= one frame
   (256 KiB). Then ``peagent write --journal J`` killed with SIGKILL when nginx has sent 30 % and
   60 % of the blob (bytes counted from nginx's access log, ``$body_bytes_sent``), and run again,
   with the journal and without it (the in-place check alone, as after a power loss in the PE);
   goal: the rerun fetches at most what the target lacked after the kill (the blob bytes of the
   frames not right on it, found by reading it) plus two frames. What the killed run had fetched
   but not written (its ranges in flight, lost with the process) is reported: killed + rerun - blob.

3. ``delta``: the rebuilt-ext4 pair (tests.support.ext4pair, full size: ~1.3 GiB of data, 354 files
   changed); the target holds A (a copy of A.img). Bytes fetched (nginx's access log, every file
   counted) by: peagent with B's full image and ``--reuse scan``; peagent with B built as a
   differencing image over A (``--base``), default options; for reference peagent with B's full
   image and default options (no scan: only what is in place); and ``casync extract --seed=A.img``
   of ``casync make`` of B (casync 2; casync cannot use its output as a seed here: "Stale file
   handle", so it writes a new file, seeded from A). Goal: peagent <= 1.2 x the raw floor (B's
   4 KiB blocks found nowhere in A, times 4096, computed from the raw images).

4. ``rss``: peak RSS of ``peagent write`` (GNU time's "Maximum resident set size") writing a 10
   GiB image (ten 1 GiB mixed images, seeds 1-10) into a new file; goal <= 200 MB.

Each timed run goes from the command's start to its data durable (fsync/fdatasync included: the
tools' own). Before each run: targets fresh (the file removed, or a loop device over a new sparse
file), ``sync``, page cache dropped (``echo 3 > /proc/sys/vm/drop_caches``), then the files that
run will fetch read once, so that nginx serves them from memory as a busy DP would, and the tools'
code loaded (as in the PE, which runs from RAM), while the target starts cold. Every output is
checked afterwards (its sha256 against the image's). Inputs are built once and kept in build/bench-transfer (``--rebuild`` to make them again).

    sudo .venv/bin/python -m bench.transfer [--runs 3] [--parts deploy,resume,delta,rss] [--rebuild]

Results: bench/results/transfer.json (every sample; a run of some parts keeps the others' last
figures), and a Markdown table on stdout (also written by ``--table`` from the JSON alone).
Needs root (drop_caches, loop devices), nginx, zstd, curl, bmap-tools, casync, GNU time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zstandard

from tests.support.ext4pair import PairSpec, make_pair, raw_floor
from tests.support.faultproxy import Fault, FaultProxy, FaultSchedule
from tests.support.images import mixed_image
from tests.support.nginx import Nginx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "transfer.json"
PEAGENT = str(ROOT / ".venv" / "bin" / "peagent")
MIB = 1 << 20
GIB = 1 << 30
FRAME = 256 << 10
PARTS = ("deploy", "resume", "delta", "rss")
CPUS = os.cpu_count() or 2
MIXED = "images/mixed"  # the peagent image, under the DP root
MIXED_ZST = "images/mixed.raw.zst"
MIXED_BMAP = "images/mixed.raw.bmap"
BLOB = "/" + MIXED + "/image.blob"

# --- small tools ------------------------------------------------------------------------------


def run(argv: list[str] | str, **kw: object) -> subprocess.CompletedProcess:
    """Run a command (a string: through sh); raise with its output when it fails."""
    proc = subprocess.run(argv, shell=isinstance(argv, str), capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def timed(argv: list[str] | str) -> tuple[float, str]:
    """Wall seconds of a command, and its stderr."""
    started = time.monotonic()
    proc = run(argv)
    return time.monotonic() - started, proc.stderr


def drop_caches() -> None:
    run(["sync"])
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def warm(*paths: Path) -> None:
    """Read files once so that nginx serves them from the page cache."""
    buf = bytearray(16 * MIB)
    for path in paths:
        with path.open("rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def warm_tools() -> None:
    """Load every tool's code into the page cache, as it is in the PE (whose root file system is in
    RAM): a cold start would time reading Python's modules from disk, not the transfer."""
    run([str(ROOT / ".venv" / "bin" / "python"), "-c", "import peagent.cli, peagent.image.job, peagent.image.writer"])
    run(["bmaptool", "--version"])
    run("curl --version; zstd --version; dd --version; casync --version || true")


def cold_start(*served: Path) -> None:
    """Before a timed run: everything on disk, caches dropped, the files to be served and the tools'
    code read again."""
    drop_caches()
    warm(*served)
    warm_tools()


def sha256_of(path: str, size: int) -> str:
    h = hashlib.sha256()
    buf = bytearray(16 * MIB)
    with open(path, "rb", buffering=0) as f:
        left = size
        while left:
            n = f.readinto(memoryview(buf)[:min(len(buf), left)])
            if not n:
                break
            h.update(memoryview(buf)[:n])
            left -= n
    return h.hexdigest()


def load() -> float:
    return round(os.getloadavg()[0], 2)


def summary(values: list[float], digits: int = 2) -> dict[str, object]:
    return {"samples": [round(v, digits) for v in values], "median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def span(s: dict) -> str:
    """'1.23 (1.10-1.40)': median and range."""
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def chmod_tree(path: Path) -> None:
    """nginx's workers run as nobody: everything served must be world-readable."""
    run(["chmod", "-R", "a+rX", str(path)])


@contextlib.contextmanager
def fresh_target(work: Path, kind: str, size: int) -> Iterator[str]:
    """A target that starts fresh: a file that does not exist yet, or a loop device over a new sparse file."""
    if kind == "file":
        path = work / "target.img"
        path.unlink(missing_ok=True)
        try:
            yield str(path)
        finally:
            path.unlink(missing_ok=True)
        return
    backing = work / "loop-backing.img"
    backing.unlink(missing_ok=True)
    with backing.open("wb") as f:
        f.truncate(size)
    dev = run(["losetup", "--find", "--show", str(backing)]).stdout.strip()
    try:
        yield dev
    finally:
        run(["losetup", "--detach", dev])
        backing.unlink(missing_ok=True)


def read_frames(path: Path) -> list[tuple[int, int, int]]:
    """(kind, blob offset, compressed length) of every frame in a frames.bin (docs/image-format.md)."""
    data = path.read_bytes()
    magic, count, _ = struct.unpack_from("<8sII", data)
    assert magic == b"PEAFRM01", path
    return [struct.unpack_from("<BQI", data, 16 + 53 * i) for i in range(count)]


def missing_blob_bytes(target: str, image_dir: Path, size: int) -> int:
    """Blob bytes of the frames not right on ``target`` (kind 1, full frames: the mixed image has no
    other kind with data): what a perfect resume would still have to fetch."""
    data = (image_dir / "frames.bin").read_bytes()
    _, count, frame_size = struct.unpack_from("<8sII", data)
    missing = 0
    with open(target, "rb", buffering=0) as f:
        for j in range(count):
            kind, _, length, _, digest = struct.unpack_from("<BQIQ32s", data, 16 + 53 * j)
            if kind != 1:
                continue
            f.seek(j * frame_size)
            if hashlib.sha256(f.read(min(frame_size, size - j * frame_size))).digest() != digest:
                missing += length
    return missing


def served_bytes(dp: Nginx, since: int, blob_suffix: str = "image.blob") -> dict[str, int]:
    """Body bytes nginx sent since access-log entry ``since``: blob(s), everything, and requests."""
    entries = dp.access()[since:]
    return {"total": sum(int(e["body"]) for e in entries),
            "blob": sum(int(e["body"]) for e in entries if e["path"].endswith(blob_suffix)),
            "requests": len(entries)}


def settle(dp: Nginx, quiet: float = 0.5, timeout: float = 10.0) -> int:
    """Wait until nginx's access log stops growing (aborted requests are logged when noticed)."""
    deadline = time.monotonic() + timeout
    count, since = len(dp.access()), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.05)
        now = len(dp.access())
        if now != count:
            count, since = now, time.monotonic()
    return count


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        with contextlib.suppress(Exception):
            proc = subprocess.run(argv, capture_output=True, text=True)
            return (proc.stdout or proc.stderr).splitlines()[0].strip()
        return "?"
    return {"peagent": run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]).stdout.strip(),
            "python": platform.python_version(), "python-zstandard": zstandard.__version__,
            "zstd": first_line(["zstd", "--version"]), "curl": first_line(["curl", "--version"]),
            "nginx": first_line(["nginx", "-v"]), "bmaptool": first_line(["bmaptool", "--version"]),
            "casync": first_line(["casync", "--version"]), "kernel": platform.release()}


# --- inputs (built once, kept) ---------------------------------------------------------------


class Inputs:
    """The images, under ``work`` (the DP root is ``work/dp``); each made only when missing."""

    def __init__(self, work: Path, rebuild: bool) -> None:
        self.work, self.dp = work, work / "dp"
        if rebuild and work.exists():
            shutil.rmtree(work)
        (self.dp / "images").mkdir(parents=True, exist_ok=True)
        self.keys = work / "keys"
        if not (self.keys / "peagent.pub").exists():
            run([PEAGENT, "keys", "-o", str(self.keys)])
        self.pub = str(self.keys / "peagent.pub")

    def build(self, source: Path, out: Path, name: str, version: str, *extra: str) -> None:
        if not (out / "manifest.json").exists():
            shutil.rmtree(out, ignore_errors=True)
            run([PEAGENT, "image", "build", str(source), "-o", str(out), "--name", name, "--version", version,
                 "--key", str(self.keys / "peagent.key"), *extra])
        chmod_tree(out)

    def manifest(self, rel: str) -> dict:
        return json.loads((self.dp / rel / "manifest.json").read_text())

    def mixed(self) -> dict:
        """The 1 GiB mixed image: peagent image, .zst (zstd -3) and .bmap."""
        sparse = self.work / "mixed.sparse"
        if not sparse.exists():
            print("making the 1 GiB mixed image", file=sys.stderr)
            data = mixed_image(self.work / "mixed.raw", GIB, seed=1)
            (self.work / "mixed.raw").unlink()
            write_sparse_image(sparse, data)
            del data
        self.build(sparse, self.dp / MIXED, "mixed", "1")
        zst, bmap = self.dp / MIXED_ZST, self.dp / MIXED_BMAP
        if not zst.exists():
            run(["zstd", "-q", "-3", str(sparse), "-o", str(zst)])
        if not bmap.exists():
            run(["bmaptool", "create", str(sparse), "-o", str(bmap)])
        chmod_tree(self.dp / "images")
        m = self.manifest(MIXED)
        frames = read_frames(self.dp / MIXED / "frames.bin")
        data_bytes = sum(min(FRAME, m["size"] - i * FRAME) for i, (kind, _, _) in enumerate(frames) if kind != 0)
        return {"size": m["size"], "sha256": m["sha256"], "blob": m["blob"]["size"],
                "zst": zst.stat().st_size, "data_bytes": data_bytes, "frames": len(frames),
                "hole_frames": sum(1 for f in frames if f[0] == 0)}

    def pair(self) -> dict:
        """The rebuilt-ext4 pair, its floor, the three peagent images and casync's store."""
        where = self.work / "ext4pair"
        info_path = where / "info.json"
        if not info_path.exists():
            print("making the rebuilt-ext4 pair (minutes)", file=sys.stderr)
            pair = make_pair(where, PairSpec(seed=1))
            shutil.rmtree(pair.tree)
            blocks, floor = raw_floor(pair.a, pair.b)
            info = {"a_size": pair.a.stat().st_size, "b_size": pair.b.stat().st_size,
                    "b_sha256": sha256_of(str(pair.b), pair.b.stat().st_size),
                    "floor_blocks": blocks, "floor_bytes": floor}
            info_path.write_text(json.dumps(info, indent=2) + "\n")
        info = json.loads(info_path.read_text())
        a, b = where / "A.img", where / "B.img"
        ext4 = self.dp / "images" / "ext4"
        self.build(a, ext4 / "A", "ext4", "A")
        self.build(b, ext4 / "B", "ext4", "B")
        self.build(b, ext4 / "B-over-A", "ext4", "B", "--base", str(ext4 / "A"))
        zst = where / "B.img.zst"
        if not zst.exists():
            run(["zstd", "-q", "-3", str(b), "-o", str(zst)])
        cas = self.dp / "casync"
        if not (cas / "B.caibx").exists():
            shutil.rmtree(cas, ignore_errors=True)
            cas.mkdir()
            run(["casync", "make", f"--store={cas / 'store'}", str(cas / "B.caibx"), str(b)])
        chmod_tree(cas)
        chmod_tree(ext4)
        store = [p.stat().st_size for p in (cas / "store").rglob("*.cacnk")]
        info.update(a=str(a), b=str(b), b_zst3=zst.stat().st_size,
                    b_full_files=sum(p.stat().st_size for p in (ext4 / "B").iterdir()),
                    b_over_a_files=sum(p.stat().st_size for p in (ext4 / "B-over-A").iterdir()),
                    casync_chunks=len(store), casync_store=sum(store), casync_index=(cas / "B.caibx").stat().st_size)
        return info

    def big(self, gib: int) -> dict:
        """A ``gib`` GiB image: that many 1 GiB mixed images (seeds 1, 2, ...), built by peagent."""
        out = self.dp / "images" / f"big{gib}g"
        if not (out / "manifest.json").exists():
            raw = self.work / f"big{gib}g.raw"
            print(f"making the {gib} GiB image (minutes)", file=sys.stderr)
            with raw.open("wb") as f:
                f.truncate(gib * GIB)
                for i in range(gib):
                    data = mixed_image(self.work / "chunk.raw", GIB, seed=i + 1)
                    for at in range(0, GIB, MIB):
                        piece = data[at:at + MIB]
                        if piece.count(0) != MIB:
                            f.seek(i * GIB + at)
                            f.write(piece)
                    del data
            (self.work / "chunk.raw").unlink()
            self.build(raw, out, "big", "1")
            raw.unlink()
        chmod_tree(out)
        m = self.manifest(f"images/big{gib}g")
        return {"size": m["size"], "sha256": m["sha256"], "blob": m["blob"]["size"], "dir": str(out)}


def write_sparse_image(path: Path, data: bytes) -> None:
    """``data`` into a new file, all-zero 4 KiB blocks left as holes (bmaptool create maps the rest)."""
    from tests.support.bmaps import write_sparse

    write_sparse(path, data)


# --- 1. full deploy --------------------------------------------------------------------------


def deploy(inputs: Inputs, dp: Nginx, runs: int, kinds: list[str]) -> dict:
    image = inputs.mixed()
    zst, bmap = inputs.dp / MIXED_ZST, inputs.dp / MIXED_BMAP
    url = dp.url
    methods: dict[str, tuple[Callable[[str], list[str] | str], tuple[Path, ...]]] = {
        "peagent": (lambda t: [PEAGENT, "write", f"{url}{MIXED}/manifest.json", t, "--key", inputs.pub],
                    tuple(inputs.dp / MIXED / n for n in ("manifest.json", "manifest.json.sig", "frames.bin",
                                                           "blocks.bin.zst", "image.blob"))),
        "pipeline": (lambda t: f"curl -s {url}{MIXED_ZST} | zstd -dc | dd of={t} bs=4M iflag=fullblock "
                               "conv=sparse,fsync status=none", (zst,)),
        "bmaptool": (lambda t: ["bmaptool", "-q", "copy", "--bmap", f"{url}{MIXED_BMAP}", f"{url}{MIXED_ZST}", t],
                     (zst, bmap)),
    }
    out: dict[str, object] = {"when": time.strftime("%Y-%m-%d %H:%M"), "image": image}
    ceilings = measure_ceilings(inputs, dp, image, runs, kinds)
    out["ceilings"] = ceilings
    for kind in kinds:
        samples: dict[str, list[float]] = {m: [] for m in methods}
        loads: dict[str, list[float]] = {m: [] for m in methods}
        for r in range(runs):
            order = list(methods)
            order = order[r % len(order):] + order[:r % len(order)]  # no method always first after a drop
            for name in order:
                command, served = methods[name]
                with fresh_target(inputs.work, kind, image["size"]) as target:
                    cold_start(*served)
                    loads[name].append(load())
                    seconds, _ = timed(command(target))
                    got = sha256_of(target, image["size"])
                    if got != image["sha256"]:
                        raise RuntimeError(f"{name} into a {kind}: wrong sha256 {got}")
                samples[name].append(seconds)
                print(f"deploy {kind} {name} run {r + 1}: {seconds:.2f} s (load {loads[name][-1]})", file=sys.stderr)
        results = {m: {**summary(v), "load": loads[m],
                       "mib_per_s": round(image["size"] / MIB / statistics.median(v))} for m, v in samples.items()}
        p = statistics.median(samples["peagent"])
        stages = {"network": ceilings["network"]["median"], "verify": ceilings["verify_threads"]["median"],
                  "disk": ceilings[f"disk_{kind}"]["median"]}
        slowest = max(stages, key=lambda s: stages[s])
        results["ratios"] = {
            "peagent_over_pipeline": round(p / statistics.median(samples["pipeline"]), 3),
            "peagent_over_bmaptool": round(p / statistics.median(samples["bmaptool"]), 3),
            "slowest_stage": slowest, "slowest_stage_seconds": stages[slowest],
            "peagent_pct_of_slowest_stage": round(100 * stages[slowest] / p, 1),
        }
        out[kind] = results
    return out


def measure_ceilings(inputs: Inputs, dp: Nginx, image: dict, runs: int, kinds: list[str]) -> dict:
    """Each stage alone, seconds for this image (see the module docstring)."""
    blob_path = inputs.dp / MIXED / "image.blob"
    zst = inputs.dp / MIXED_ZST
    frames = read_frames(inputs.dp / MIXED / "frames.bin")
    full = [(offset, length) for kind, offset, length in frames if kind == 1]
    samples: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        samples.setdefault(name, []).append(seconds)

    blob = blob_path.read_bytes()
    decompressed: list[bytes] = []
    for r in range(runs):
        cold_start(blob_path, zst)
        add("network", timed(["curl", "-s", "-o", "/dev/null", f"{dp.url}{MIXED}/image.blob"])[0])
        add("network_zst", timed(["curl", "-s", "-o", "/dev/null", f"{dp.url}{MIXED_ZST}"])[0])
        add("zstd_dc", timed(f"zstd -dc {zst} > /dev/null")[0])
        for threads in sorted({1, CPUS}):
            suffix = "1" if threads == 1 else "threads"
            add(f"decompress_{suffix}", python_stage(blob, full, threads, decompress=True, digest=False))
            add(f"verify_{suffix}", python_stage(blob, full, threads, decompress=True, digest=True))
        if not decompressed:
            d = zstandard.ZstdDecompressor()
            decompressed = [d.decompress(blob[o:o + n], max_output_size=FRAME) for o, n in full]
        for threads in sorted({1, CPUS}):
            add(f"sha256_{'1' if threads == 1 else 'threads'}", hash_stage(decompressed, threads))
        count = -(-image["data_bytes"] // (4 * MIB))
        for kind in kinds:
            with fresh_target(inputs.work, kind, image["size"]) as target:
                drop_caches()
                add(f"disk_{kind}", timed(["dd", "if=/dev/zero", f"of={target}", "bs=4M", f"count={count}",
                                           "oflag=direct", "conv=fsync", "status=none"])[0])
        print(f"ceilings run {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in samples.items()), file=sys.stderr)
    del blob, decompressed
    out = {k: summary(v, 3) for k, v in samples.items()}
    out["threads"] = CPUS  # type: ignore[assignment]
    return out


def python_stage(blob: bytes, full: list[tuple[int, int]], threads: int, *, decompress: bool, digest: bool) -> float:
    """Seconds to decompress (and hash) every stored frame, ``threads`` threads, as peagent's pool does."""
    view = memoryview(blob)
    local = threading.local()

    def one(piece: tuple[int, int]) -> None:
        d = getattr(local, "d", None)
        if d is None:
            d = local.d = zstandard.ZstdDecompressor()
        data = d.decompress(view[piece[0]:piece[0] + piece[1]], max_output_size=FRAME)
        if digest:
            hashlib.sha256(data).digest()

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(one, full, chunksize=64):
            pass
    return time.monotonic() - started


def hash_stage(frames: list[bytes], threads: int) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda f: hashlib.sha256(f).digest(), frames, chunksize=64):
            pass
    return time.monotonic() - started


# --- 2. resume -------------------------------------------------------------------------------


def resume(inputs: Inputs, dp: Nginx, runs: int, drops: list[int], kills: list[float]) -> dict:
    image = inputs.mixed()
    served = tuple(inputs.dp / MIXED / n for n in ("manifest.json", "manifest.json.sig", "frames.bin",
                                                   "blocks.bin.zst", "image.blob"))
    out: dict[str, object] = {"when": time.strftime("%Y-%m-%d %H:%M"), "blob": image["blob"], "drops": {},
                              "kills": {}}
    for n in drops:
        rows = []
        for seed in range(1, runs + 1):
            rng = random.Random(seed)
            offsets = sorted(rng.sample(range(image["blob"]), n))
            schedule = FaultSchedule([Fault("drop", offset=o, path=BLOB) for o in offsets], seed)
            with FaultProxy(dp.url, schedule) as proxy, fresh_target(inputs.work, "file", image["size"]) as target:
                cold_start(*served)
                seconds, err = timed([PEAGENT, "write", f"{proxy.url}{MIXED}/manifest.json", target,
                                      "--key", inputs.pub])
                proxy.wait_idle()
                fetched = proxy.body_bytes(BLOB)
                fired = sum(1 for f in proxy.fired if f.fault.kind == "drop")
                assert sha256_of(target, image["size"]) == image["sha256"]
                retries = len(re.findall(r"retry:", err))
            extra = fetched - image["blob"]
            rows.append({"seed": seed, "offsets": offsets, "fired": fired, "fetched": fetched, "extra": extra,
                         "extra_per_drop": round(extra / fired) if fired else 0, "retries": retries,
                         "seconds": round(seconds, 2)})
            print(f"resume {n} drops seed {seed}: extra {extra} bytes over {fired} drops, {seconds:.1f} s",
                  file=sys.stderr)
        worst = max(r["extra_per_drop"] for r in rows)
        out["drops"][str(n)] = {"runs": rows, "max_extra_per_drop": worst,  # type: ignore[index]
                                "max_extra": max(r["extra"] for r in rows)}
    for fraction in kills:
        for journal in (True, False):
            rows = []
            for _ in range(runs):
                rows.append(kill_and_rerun(inputs, dp, image, fraction, journal, served))
                r = rows[-1]
                print(f"resume kill at {fraction:.0%} ({'journal' if journal else 'no journal'}): killed run "
                      f"{r['killed_run']}, target lacked {r['missing_at_kill']}, rerun {r['rerun']}, "
                      f"lost in flight {r['lost_in_flight']}", file=sys.stderr)
            out["kills"][f"{fraction:.0%} {'journal' if journal else 'no-journal'}"] = {  # type: ignore[index]
                "runs": rows, "max_over_blob": max(r["over_blob"] for r in rows),
                "max_rerun_over_missing": max(r["rerun_over_missing"] for r in rows),
                "median_lost_in_flight": statistics.median(r["lost_in_flight"] for r in rows)}
    return out


def kill_and_rerun(inputs: Inputs, dp: Nginx, image: dict, fraction: float, keep_journal: bool,
                   served: tuple[Path, ...]) -> dict:
    """SIGKILL ``peagent write`` when nginx has sent ``fraction`` of the blob, then run it again."""
    journal = inputs.work / "kill.journal"
    journal.unlink(missing_ok=True)
    with fresh_target(inputs.work, "file", image["size"]) as target:
        argv = [PEAGENT, "write", f"{dp.url}{MIXED}/manifest.json", target, "--key", inputs.pub,
                "--journal", str(journal)]
        cold_start(*served)
        start = len(dp.access())
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            if served_bytes(dp, start)["blob"] >= fraction * image["blob"]:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait()
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"peagent write ended ({proc.returncode}) before it could be killed")
        middle = settle(dp)
        killed = served_bytes(dp, start)
        killed_blob = sum(int(e["body"]) for e in dp.access()[start:middle] if e["path"] == BLOB)
        missing = missing_blob_bytes(target, inputs.dp / MIXED, image["size"])
        if not keep_journal:
            journal.unlink(missing_ok=True)
        argv = argv if keep_journal else argv[:-2]
        seconds, _ = timed(argv)
        settle(dp)
        rerun = served_bytes(dp, middle)
        assert sha256_of(target, image["size"]) == image["sha256"]
    journal.unlink(missing_ok=True)
    total = killed_blob + rerun["blob"]
    return {"fraction": fraction, "journal": keep_journal, "killed_run": killed_blob,
            "killed_run_pct": round(100 * killed_blob / image["blob"], 1), "rerun": rerun["blob"],
            "missing_at_kill": missing, "rerun_over_missing": rerun["blob"] - missing,
            "total": total, "over_blob": total - image["blob"], "lost_in_flight": total - image["blob"],
            "rerun_seconds": round(seconds, 2), "metadata_bytes": killed["total"] - killed["blob"]
            + rerun["total"] - rerun["blob"]}


# --- 3. delta --------------------------------------------------------------------------------


def delta(inputs: Inputs, dp: Nginx, runs: int) -> dict:
    info = inputs.pair()
    a = Path(info["a"])
    url = dp.url
    ext4 = inputs.dp / "images" / "ext4"
    cas = inputs.dp / "casync"
    methods: dict[str, tuple[Callable[[str], list[str]], bool, tuple[Path, ...]]] = {
        # name: (command, target holds A, files served)
        "peagent B full, reuse scan": (
            lambda t: [PEAGENT, "write", f"{url}images/ext4/B/manifest.json", t, "--key", inputs.pub,
                       "--reuse", "scan"], True, tuple((ext4 / "B").iterdir())),
        "peagent B over A": (
            lambda t: [PEAGENT, "write", f"{url}images/ext4/B-over-A/manifest.json", t, "--key", inputs.pub],
            True, (*(ext4 / "B-over-A").iterdir(), *(ext4 / "A").iterdir())),
        "peagent B full, default (no scan)": (
            lambda t: [PEAGENT, "write", f"{url}images/ext4/B/manifest.json", t, "--key", inputs.pub],
            True, tuple((ext4 / "B").iterdir())),
        "casync --seed=A.img": (
            lambda t: ["casync", "extract", f"--store={url}casync/store", f"--seed={a}", f"{url}casync/B.caibx", t],
            False, (cas / "B.caibx",)),
    }
    out: dict[str, object] = {"when": time.strftime("%Y-%m-%d %H:%M"), "pair": info, "methods": {}}
    for name, (command, holds_a, served) in methods.items():
        rows = []
        for r in range(runs):
            target = inputs.work / "delta-target.img"
            target.unlink(missing_ok=True)
            if holds_a:
                run(["cp", "--sparse=always", str(a), str(target)])
            if name.startswith("casync"):
                served = (cas / "B.caibx", a, *(cas / "store").rglob("*.cacnk"))
            cold_start(*served)
            start = len(dp.access())
            seconds, _ = timed(command(str(target)))
            end = settle(dp)
            got = served_bytes(dp, start, "image.blob" if name.startswith("peagent") else ".cacnk")
            got["requests"] = end - start
            assert sha256_of(str(target), info["b_size"]) == info["b_sha256"], name
            target.unlink()
            rows.append({**got, "seconds": round(seconds, 2)})
            print(f"delta {name} run {r + 1}: {got['total']} bytes, {got['requests']} requests, {seconds:.1f} s",
                  file=sys.stderr)
        total = statistics.median(row["total"] for row in rows)
        out["methods"][name] = {"runs": rows, "bytes": total,  # type: ignore[index]
                                "mib": round(total / MIB, 1), "over_floor": round(total / info["floor_bytes"], 2),
                                "seconds": summary([row["seconds"] for row in rows])}
    return out


# --- 4. peak RSS ------------------------------------------------------------------------------


def rss(inputs: Inputs, dp: Nginx, runs: int, gib: int) -> dict:
    big = inputs.big(gib)
    rel = f"images/big{gib}g"
    served = tuple(Path(big["dir"]).iterdir())
    rows = []
    for r in range(runs):
        with fresh_target(inputs.work, "file", big["size"]) as target:
            cold_start(*served)
            started = time.monotonic()
            proc = run(["/usr/bin/time", "-v", PEAGENT, "write", f"{dp.url}{rel}/manifest.json", target,
                        "--key", inputs.pub])
            seconds = time.monotonic() - started
            kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))  # type: ignore[union-attr]
            assert sha256_of(target, big["size"]) == big["sha256"]
        rows.append({"seconds": round(seconds, 2), "peak_rss_mb": round(kib * 1024 / 1e6, 1)})
        print(f"rss run {r + 1}: {rows[-1]}", file=sys.stderr)
    return {"when": time.strftime("%Y-%m-%d %H:%M"), "image": big, "runs": rows,
            "peak_rss_mb": summary([row["peak_rss_mb"] for row in rows], 1),
            "seconds": summary([row["seconds"] for row in rows]),
            "mib_per_s": round(big["size"] / MIB / statistics.median(row["seconds"] for row in rows))}


# --- goals and the table -----------------------------------------------------------------------


def goals(results: dict) -> list[dict]:
    out = []

    def goal(what: str, measured: float, limit: float, fmt: str, more_is_better: bool = False) -> None:
        met = measured >= limit if more_is_better else measured <= limit
        out.append({"goal": what, "measured": measured, "limit": limit, "met": met,
                    "text": fmt.format(measured), "limit_text": ("≥ " if more_is_better else "≤ ") + fmt.format(limit)})

    d = results.get("deploy")
    if d:
        for kind in ("file", "loop"):
            if kind in d:
                ratios = d[kind]["ratios"]
                goal(f"deploy into a {kind}: peagent / pipeline", ratios["peagent_over_pipeline"], 0.6, "{:.2f}")
                goal(f"deploy into a {kind}: peagent / bmaptool", ratios["peagent_over_bmaptool"], 0.8, "{:.2f}")
                goal(f"deploy into a {kind}: peagent, % of the slowest stage ({ratios['slowest_stage']})",
                     ratios["peagent_pct_of_slowest_stage"], 90, "{:.0f} %", more_is_better=True)
    r = results.get("resume")
    if r:
        for n, row in r["drops"].items():
            if int(n):
                goal(f"{n} resets: extra bytes per reset (worst run)", row["max_extra_per_drop"] / 1024, 256,
                     "{:.0f} KiB")
        for label, row in r["kills"].items():
            goal(f"SIGKILL at {label}: the rerun fetched minus what the target lacked (worst run)",
                 row["max_rerun_over_missing"] / 1024, 512, "{:.0f} KiB")
    dl = results.get("delta")
    if dl:
        for name in ("peagent B full, reuse scan", "peagent B over A"):
            if name in dl["methods"]:
                goal(f"re-image A→B, {name}: fetched / raw floor", dl["methods"][name]["over_floor"], 1.2, "{:.2f}")
    s = results.get("rss")
    if s:
        goal(f"peak RSS writing {s['image']['size'] // GIB} GiB (worst run)", s["peak_rss_mb"]["max"], 200,
             "{:.0f} MB")
    return out


def table(results: dict) -> str:
    lines = ["| goal | measured | target | met |", "|---|---|---|---|"]
    for g in results.get("goals", []):
        lines.append(f"| {g['goal']} | {g['text']} | {g['limit_text']} | {'yes' if g['met'] else '**no**'} |")
    d = results.get("deploy")
    if d:
        img = d["image"]
        lines += ["", f"Full deploy, 1 GiB mixed image (peagent blob {img['blob'] / MIB:.0f} MiB, .zst "
                      f"{img['zst'] / MIB:.0f} MiB, {img['data_bytes'] / MIB:.0f} MiB outside holes), seconds: "
                      "median (range) of the runs, start to data durable", "",
                  "| target | peagent | pipeline (curl \\| zstd -dc \\| dd) | bmaptool copy | peagent/pipeline | "
                  "peagent/bmaptool |", "|---|---|---|---|---|---|"]
        for kind in ("file", "loop"):
            if kind in d:
                k = d[kind]
                lines.append(f"| {kind} | {span(k['peagent'])} | {span(k['pipeline'])} | {span(k['bmaptool'])} | "
                             f"{k['ratios']['peagent_over_pipeline']:.2f} | {k['ratios']['peagent_over_bmaptool']:.2f} |")
        c = d["ceilings"]
        names = [("network", "network: curl of the blob (1 connection)"),
                 ("network_zst", "network: curl of the .zst"),
                 ("zstd_dc", "zstd -dc of the .zst > /dev/null"),
                 ("decompress_1", "python-zstandard, the blob's frames, 1 thread"),
                 ("decompress_threads", f"python-zstandard, the blob's frames, {c['threads']} threads"),
                 ("sha256_1", "sha256 of the frames, 1 thread"),
                 ("sha256_threads", f"sha256 of the frames, {c['threads']} threads"),
                 ("verify_1", "verify stage (decompress + sha256 per frame), 1 thread"),
                 ("verify_threads", f"verify stage, {c['threads']} threads (peagent's)"),
                 ("disk_file", "disk: dd oflag=direct conv=fsync, new file"),
                 ("disk_loop", "disk: dd oflag=direct conv=fsync, loop device")]
        lines += ["", "Ceilings (each stage alone, same run), seconds for this image:", "",
                  "| stage | seconds |", "|---|---|"]
        lines += [f"| {label} | {span(c[key])} |" for key, label in names if key in c]
    r = results.get("resume")
    if r:
        lines += ["", f"Resume (blob {r['blob']:,} bytes):", "",
                  "| scenario | fetched beyond the blob (per run) | per disconnect, worst |", "|---|---|---|"]
        for n, row in r["drops"].items():
            extras = ", ".join(f"{x['extra']:,}" for x in row["runs"])
            lines.append(f"| {n} resets (RST) via the fault proxy | {extras} | "
                         f"{row['max_extra_per_drop'] / 1024:.1f} KiB |")
        lines += ["", "| SIGKILL when nginx has sent | killed run fetched | target lacked | rerun fetched | "
                      "rerun - lacked | killed + rerun - blob (data in flight at the kill) |",
                  "|---|---|---|---|---|---|"]
        for label, row in r["kills"].items():
            runs = row["runs"]

            def col(key: str, unit: int = MIB, fmt: str = "{:.1f} MiB", runs: list = runs) -> str:
                return ", ".join(fmt.format(x[key] / unit) for x in runs)
            lines.append(f"| {label} | {col('killed_run_pct', 1, '{:.0f} %')} | {col('missing_at_kill')} | "
                         f"{col('rerun')} | {col('rerun_over_missing', 1024, '{:.0f} KiB')} | {col('over_blob')} |")
    dl = results.get("delta")
    if dl:
        p = dl["pair"]
        lines += ["", f"Re-image A→B, rebuilt ext4 pair ({p['b_size'] / MIB:.0f} MiB images): raw floor "
                      f"{p['floor_bytes'] / MIB:.1f} MiB ({p['floor_blocks']} blocks); B in full: peagent image "
                      f"{p['b_full_files'] / MIB:.1f} MiB, zstd -3 {p['b_zst3'] / MIB:.1f} MiB", "",
                  "| method | fetched (all files) | x floor | requests | seconds |", "|---|---|---|---|---|"]
        for name, m in dl["methods"].items():
            lines.append(f"| {name} | {m['mib']:.1f} MiB | {m['over_floor']:.2f} | "
                         f"{statistics.median(x['requests'] for x in m['runs']):.0f} | {span(m['seconds'])} |")
    s = results.get("rss")
    if s:
        lines += ["", f"{s['image']['size'] // GIB} GiB image (blob {s['image']['blob'] / MIB:.0f} MiB) into a new "
                      f"file: peak RSS {span(s['peak_rss_mb'])} MB, {span(s['seconds'])} s ({s['mib_per_s']} MiB/s)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--targets", default="file,loop", help="deploy: file, loop or both")
    parser.add_argument("--drops", default="0,5,20", help="resume: numbers of resets")
    parser.add_argument("--kills", default="0.3,0.6", help="resume: when to kill (fraction of the blob sent)")
    parser.add_argument("--big-gib", type=int, default=10)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-transfer")
    parser.add_argument("--rebuild", action="store_true", help="make every input again")
    parser.add_argument("--table", action="store_true", help="print the table of the saved results and stop")
    args = parser.parse_args()
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.table:
        print(table(saved))
        return
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {unknown}")
    inputs = Inputs(args.work, args.rebuild)
    results = {k: v for k, v in saved.items() if k in PARTS}
    with Nginx(inputs.dp) as dp:
        if "deploy" in parts:
            results["deploy"] = deploy(inputs, dp, args.runs, args.targets.split(","))
        if "resume" in parts:
            results["resume"] = resume(inputs, dp, args.runs, [int(n) for n in args.drops.split(",")],
                                       [float(f) for f in args.kills.split(",")])
        if "delta" in parts:
            results["delta"] = delta(inputs, dp, args.runs)
        if "rss" in parts:
            results["rss"] = rss(inputs, dp, args.runs, args.big_gib)
    results.update(host=platform.node(), cpus=CPUS, versions=versions(), runs=args.runs)
    results["goals"] = goals(results)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
