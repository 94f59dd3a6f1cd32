"""Test images with the texture of real disks: random (compressed) data, text, and zeros."""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

MIB = 1 << 20


def mixed_image(path: Path, size: int, seed: int = 1) -> bytes:
    """A deterministic image of 1 MiB regions: random, text-like or zero, in a seeded order."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(512)]
    out = bytearray()
    while len(out) < size:
        kind = rng.choice(("random", "text", "zero", "zero"))
        if kind == "random":
            out += rng.randbytes(MIB)
        elif kind == "text":
            line = bytearray()
            while len(line) < MIB:
                line += rng.choice(words) + b" "
            out += line[:MIB]
        else:
            out += bytes(MIB)
    data = bytes(out[:size])
    path.write_bytes(data)
    return data


def zstd(src: Path, dst: Path, level: int = 3) -> Path:
    subprocess.run(["zstd", "-q", "-f", f"-{level}", str(src), "-o", str(dst)], check=True)
    return dst


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
