"""Benchmark: a third-party image streamed from nginx on loopback into a file, against the shell pipeline.

The image is the research's reference texture (1 MiB regions of random, text-like and zero data,
tests.support.images.mixed_image), compressed as distributions ship it. For each compression,
each run times, fsync included, into a file on the real disk (under build/, never tmpfs):

* ``shell``: ``curl -s URL | <zstd|gzip|xz> -dc | dd of=FILE bs=4M iflag=fullblock conv=fsync``,
  which verifies nothing;
* ``peagent``: peagent.image.thirdparty.write_url into a new file (sha256 of the image checked,
  zero blocks left as holes);
* ``peagent-rerun``: the same again onto the file it just wrote: the resume path, every block
  read back and compared, nothing written;
* ``peagent-bmap`` (zstd only): with a bmap made by bmaptool, over a file of old data: mapped
  ranges written and verified per range, holes punched.

    .venv/bin/python -m bench.stream [--runs 3] [--size-mib 1024] [--kinds zstd,gzip,xz]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from peagent.image.thirdparty import StreamSource, write_url
from tests.support.bmaps import write_sparse
from tests.support.images import mixed_image
from tests.support.nginx import Nginx

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "bench-stream"
MIB = 1 << 20
TOOLS = {"zstd": (["zstd", "-q", "-3", "-T2", "-c"], "zstd", ".zst"),
         "gzip": (["gzip", "-1", "-c"], "gzip", ".gz"),
         "xz": (["xz", "-1", "-T2", "-c"], "xz", ".xz")}


def timed(fn, *args: object, **kwargs: object) -> float:
    started = time.monotonic()
    fn(*args, **kwargs)
    return time.monotonic() - started


def shell(url: str, tool: str, target: Path) -> None:
    subprocess.run(f"curl -s {url} | {tool} -dc | dd of={target} bs=4M iflag=fullblock conv=fsync status=none",
                   shell=True, check=True)


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--kinds", default="zstd,gzip,xz")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    image_path = WORK / "img.raw"
    data = mixed_image(image_path, args.size_mib * MIB, seed=1)
    digest = hashlib.sha256(data).hexdigest()
    del data
    results: dict[str, object] = {"machine": platform.machine(), "cpus": os.cpu_count(),
                                  "size_mib": args.size_mib, "runs": {}}
    with Nginx() as dp:
        os.chmod(dp.root, 0o755)
        for kind in args.kinds.split(","):
            command, tool, suffix = TOOLS[kind]
            name = "img.raw" + suffix
            with (dp.root / name).open("wb") as out:
                subprocess.run([*command, str(image_path)], stdout=out, check=True)
            os.chmod(dp.root / name, 0o644)
            url = dp.url + name
            target = WORK / "out.raw"
            runs: dict[str, list[float]] = {"shell": [], "peagent": [], "peagent-rerun": []}
            for _ in range(args.runs):
                target.unlink(missing_ok=True)
                drop_caches()
                runs["shell"].append(timed(shell, url, tool, target))
                target.unlink()
                drop_caches()
                source = StreamSource(url=url, sha256=digest, bmap=None)
                runs["peagent"].append(timed(write_url, source, str(target)))
                drop_caches()
                runs["peagent-rerun"].append(timed(write_url, source, str(target)))
            if kind == "zstd":
                write_sparse(WORK / "sparse.raw", image_path.read_bytes())
                subprocess.run(["bmaptool", "create", str(WORK / "sparse.raw"), "-o", str(dp.root / "img.raw.bmap")],
                               check=True, capture_output=True)
                os.chmod(dp.root / "img.raw.bmap", 0o644)
                runs["peagent-bmap"] = []
                for _ in range(args.runs):
                    target.write_bytes(b"")
                    subprocess.run(["dd", "if=/dev/urandom", f"of={target}", "bs=4M",
                                    f"count={args.size_mib // 4}", "status=none"], check=True)
                    drop_caches()
                    runs["peagent-bmap"].append(timed(write_url, StreamSource(url=url), str(target), resume=False))
            summary = {k: {"seconds": [round(s, 2) for s in v], "median": round(statistics.median(v), 2),
                           "mib_per_s": round(args.size_mib / statistics.median(v))} for k, v in runs.items()}
            results["runs"][kind] = summary  # type: ignore[index]
            print(kind, json.dumps(summary))
    (ROOT / "bench" / "results" / "stream.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
