"""A "rebuilt ext4 pair": two versions of a filesystem image, as a golden-image pipeline makes them.

Version A is ``mke2fs -d`` of a file tree; then the tree changes (files patched and resized, a few
added and removed) and version B is ``mke2fs -d`` of the changed tree. mke2fs lays files out
one after another, so every file after a grown one moves by whole blocks: data at another place,
which fixed-position delta tools do not find and 4 KiB block matching does
(shared/research/image-transfer.md: 1.3 GiB of data, 354 files patched and resized).

Everything follows from the seed: the same :class:`PairSpec` makes the same trees on any machine.
The images are the same byte for byte as far as mke2fs allows (the UUID, hash seed and
timestamps are fixed; inode change times are the files' own, taken when the tree is written).

The texture is that of a system image: compressed data (random bytes: packages, media), text
(slices of a generated corpus, at any byte offset so that no two files share a block by
accident), and binaries (records with zero padding, partly repeated).

    make_pair(workdir, PairSpec())            # ~1.3 GiB of data, the research figure's shape
    make_pair(workdir, PairSpec.small())      # ~24 MiB, for tests
    raw_floor(a_img, b_img)                   # blocks of B found nowhere in A, and their bytes
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
BLOCK = 4096
EPOCH = 1_700_000_000  # every file's atime and mtime, and mke2fs's clock


@dataclass(frozen=True)
class PairSpec:
    data_bytes: int = 1300 * MIB
    changed: int = 354  # files patched and resized between A and B
    added: int = 18
    removed: int = 18
    max_file: int = 24 * MIB
    seed: int = 1

    @classmethod
    def small(cls, seed: int = 1) -> PairSpec:
        return cls(data_bytes=24 * MIB, changed=12, added=2, removed=2, max_file=2 * MIB, seed=seed)


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    tree: Path  # holds B's tree afterwards
    spec: PairSpec


class _Content:
    """Deterministic file contents of three textures."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 11)))
                 for _ in range(4096)]
        punctuation = [b" ", b" ", b" ", b" ", b", ", b".\n", b" = ", b"(", b");\n"]
        parts = []
        total = 0
        while total < 8 * MIB:
            w = rng.choice(words) + rng.choice(punctuation)
            parts.append(w)
            total += len(w)
        self.corpus = b"".join(parts)

    def make(self, texture: str, size: int) -> bytes:
        rng = self.rng
        if texture == "random":
            return rng.randbytes(size)
        out = bytearray()
        if texture == "text":
            while len(out) < size:
                n = rng.randint(2048, 65536)
                at = rng.randrange(len(self.corpus) - n)
                out += self.corpus[at:at + n]
            return bytes(out[:size])
        # binary: records of code-like random bytes and zero padding, some repeated
        records: list[bytes] = []
        while len(out) < size:
            if records and rng.random() < 0.3:
                out += rng.choice(records)
                continue
            record = rng.randbytes(rng.randint(64, 2048)) + bytes(rng.randint(0, 1024))
            records.append(record)
            out += record
        return bytes(out[:size])


def _sizes(rng: random.Random, total: int, max_file: int) -> list[int]:
    """File sizes, log-uniform from 200 bytes to max_file, adding up to about ``total``."""
    sizes = []
    while total > 0:
        size = min(total, int(200 * (max_file / 200) ** rng.random()))
        sizes.append(size)
        total -= size
    return sizes


def make_tree(root: Path, spec: PairSpec) -> None:
    """Write version A's tree into ``root`` (which must not exist)."""
    rng = random.Random(spec.seed)
    content = _Content(rng)
    root.mkdir(parents=True)
    dirs = [f"d{i:02d}/s{j}" for i in range(24) for j in range(rng.randint(1, 4))]
    for n, size in enumerate(_sizes(rng, spec.data_bytes, spec.max_file)):
        texture = rng.choices(["random", "text", "binary"], weights=[4, 4, 2])[0]
        path = root / rng.choice(dirs) / f"f{n:05d}.{texture[:3]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.make(texture, size))
    _fix_times(root)


def modify_tree(root: Path, spec: PairSpec) -> list[Path]:
    """Turn A's tree into B's: patch and resize ``changed`` files, add and remove a few. Returns the changed."""
    rng = random.Random(spec.seed * 7919 + 1)
    content = _Content(rng)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    chosen = rng.sample(files, min(spec.changed + spec.removed, len(files)))
    changed, removed = chosen[:spec.changed], chosen[spec.changed:]
    for path in changed:
        texture = {"ran": "random", "tex": "text"}.get(path.suffix[1:], "binary")
        data = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 3)):  # patches in place
            n = rng.randint(16, 16384)
            at = rng.randrange(max(1, len(data)))
            data[at:at + n] = content.make(texture, n)
        r = rng.random()
        if r < 0.5:
            data += content.make(texture, rng.randint(1024, 256 << 10))
        elif r < 0.75:
            del data[len(data) - rng.randint(0, len(data) // 5):]
        path.write_bytes(bytes(data))
    for path in removed:
        path.unlink()
    dirs = sorted({p.parent for p in files})
    for n in range(spec.added):
        texture = rng.choice(["random", "text", "binary"])
        path = rng.choice(dirs) / f"new{n:04d}.{texture[:3]}"
        path.write_bytes(content.make(texture, rng.randint(4096, min(4 * MIB, spec.max_file))))
    _fix_times(root)
    return changed


def _fix_times(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)


def fs_size(tree: Path) -> int:
    """An ext4 size that holds the tree with room to spare (the rest is zeros: holes in an image)."""
    data = sum(-(-p.stat().st_size // BLOCK) * BLOCK for p in tree.rglob("*") if p.is_file())
    return (int(data * 1.3) + 64 * MIB) // MIB * MIB


def mkfs(tree: Path, image: Path, size: int, seed: int) -> None:
    fs_uuid = str(uuid.UUID(bytes=hashlib.sha256(f"ext4pair-{seed}".encode()).digest()[:16]))
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(size)
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(EPOCH))
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-U", fs_uuid,
                    "-E", f"hash_seed={fs_uuid},root_owner=0:0,lazy_itable_init=0",
                    "-d", str(tree), str(image)], check=True, env=env, capture_output=True)


def make_pair(workdir: Path, spec: PairSpec = PairSpec()) -> Pair:
    """Make ``A.img`` and ``B.img`` in ``workdir`` (and B's tree in ``workdir/tree``)."""
    if shutil.which("mke2fs") is None:
        raise RuntimeError("mke2fs is missing (Debian: e2fsprogs)")
    workdir.mkdir(parents=True, exist_ok=True)
    tree = workdir / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    make_tree(tree, spec)
    a, b = workdir / "A.img", workdir / "B.img"
    # One size for both, as a pipeline rebuilding a golden image keeps it (room for B's growth).
    size = max(fs_size(tree), (int(spec.data_bytes * 1.6) + 64 * MIB) // MIB * MIB)
    mkfs(tree, a, size, spec.seed)
    modify_tree(tree, spec)
    mkfs(tree, b, max(size, fs_size(tree)), spec.seed)
    return Pair(a, b, tree, spec)


def block_hashes(path: Path) -> list[bytes]:
    """The 8-byte sha256 prefix of every 4 KiB block (the last one as it is), as the block index has them."""
    out = []
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            out.append(hashlib.sha256(block).digest()[:8])
    return out


def missing_blocks(a: Path, b: Path) -> list[int]:
    """The block numbers of B whose content is found nowhere in A."""
    in_a = set(block_hashes(a))
    return [k for k, h in enumerate(block_hashes(b)) if h not in in_a]


def raw_floor(a: Path, b: Path) -> tuple[int, int]:
    """(blocks of B found nowhere in A, their bytes): what any delta from A to B must carry, uncompressed."""
    size = b.stat().st_size
    missing = missing_blocks(a, b)
    return len(missing), sum(min(BLOCK, size - k * BLOCK) for k in missing)


def compressed_floor(a: Path, b: Path, level: int = 9) -> int:
    """The missing blocks of B, in order, compressed as one zstd stream: the best a delta can hope for."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=level).compressobj()
    out = 0
    with b.open("rb") as f:
        for k in missing_blocks(a, b):
            f.seek(k * BLOCK)
            out += len(compressor.compress(f.read(BLOCK)))
    return out + len(compressor.flush())
