"""Benchmark: the size of a differencing image against the raw floor, on a rebuilt ext4 pair.

The pair (tests/support/ext4pair.py): A is ``mke2fs -d`` of a tree of about 1.3 GiB; B is the same
after 354 files were patched and resized (and a few added and removed), rebuilt. The raw floor
is the number of B's 4 KiB blocks found nowhere in A, times 4096: what any delta from A to B
must carry before compression (computed here directly from the raw images, independently of
peagent's code); the compressed floor is those blocks as one zstd -9 stream, the best a delta
could do. The goal (issue "Images"): a differencing image of B over A takes at most 1.2x
the floor, all its files counted (blob, frame table, block index, manifest).

Also reported: the full images, what ``peagent image diff`` estimates, the time each build took,
and that the differencing image verifies against A.

    .venv/bin/python -m bench.differencing [--small] [--seed 1] [--frame-kib 256] [--keep]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

from peagent.image.build import BuildOptions, build_from
from peagent.image.inspect import diff_images, inspect_image
from peagent.image.verify import verify_image
from tests.support.ext4pair import PairSpec, compressed_floor, make_pair, raw_floor

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "bench-differencing"
MIB = 1 << 20


def image_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="the test-sized pair (~24 MiB of data)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frame-kib", type=int, default=256)
    parser.add_argument("--keep", action="store_true", help="keep the images in build/bench-differencing")
    args = parser.parse_args()
    spec = PairSpec.small(args.seed) if args.small else PairSpec(seed=args.seed)
    if WORK.exists():
        shutil.rmtree(WORK)
    started = time.monotonic()
    pair = make_pair(WORK, spec)
    pair_seconds = time.monotonic() - started
    shutil.rmtree(pair.tree)
    missing, floor = raw_floor(pair.a, pair.b)
    packed_floor = compressed_floor(pair.a, pair.b)

    results: dict[str, object] = {}
    options = dict(frame_size=args.frame_kib << 10)
    for label, source, base in (("A full", pair.a, None), ("B full", pair.b, None), ("B over A", pair.b, "A")):
        out = WORK / label.replace(" ", "-")
        started = time.monotonic()
        build_from(str(source), str(out), BuildOptions(name="ext4pair", version=label.split()[0], **options),
                   base=str(WORK / "A-full") if base else None)
        seconds = time.monotonic() - started
        info = inspect_image(str(out))
        results[label] = {"bytes": image_bytes(out), "blob": info.blob_size, "seconds": round(seconds, 1),
                          "frames": {k: v.frames for k, v in info.kinds.items() if v.frames}}
    diff = diff_images(str(WORK / "A-full"), str(WORK / "B-full"))
    verified = verify_image(str(WORK / "B-over-A"))
    differencing = results["B over A"]["bytes"]  # type: ignore[index]
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(),
        "spec": {"data_mib": spec.data_bytes // MIB, "changed": spec.changed, "added": spec.added,
                 "removed": spec.removed, "seed": spec.seed, "frame_kib": args.frame_kib},
        "image_mib": {"A": round(pair.a.stat().st_size / MIB, 1), "B": round(pair.b.stat().st_size / MIB, 1)},
        "pair_seconds": round(pair_seconds, 1),
        "floor": {"blocks": missing, "bytes": floor, "mib": round(floor / MIB, 2),
                  "compressed_bytes": packed_floor, "compressed_mib": round(packed_floor / MIB, 2)},
        "builds": results,
        "differencing_over_floor": round(differencing / floor, 3),  # type: ignore[operator]
        "differencing_over_compressed_floor": round(differencing / packed_floor, 3),  # type: ignore[operator]
        "diff_estimate": {"fetch_mib": round(diff.fetch.fetch_bytes / MIB, 2),
                          "fetch_frames": diff.fetch.frames, "moved_frames": diff.moved.frames,
                          "in_place_frames": diff.in_place.frames, "floor_mib": round(diff.floor_bytes / MIB, 2),
                          "differencing_estimate_mib": round(diff.differencing_estimate / MIB, 2)},
        "verify": verified.verdict,
    }
    print(json.dumps(report, indent=2))
    if not args.small:
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        (ROOT / "bench" / "results" / "differencing.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(WORK)


if __name__ == "__main__":
    main()
