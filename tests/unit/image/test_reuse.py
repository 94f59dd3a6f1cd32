"""The reuse planner, run against a bytearray model of the disk: for random old and new images (blocks
moved, duplicated, changed, zeroed), executing the plan yields the new image, no action reads a
region after it was overwritten, and nothing is fetched that a plain fetch of the changed frames
would not fetch."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peagent.errors import ManifestError
from peagent.image.blockmap import UNKNOWN, BlockFinder, key_of
from peagent.image.format import BLOCK, block_hash
from peagent.image.reuse import DISK, DiskView, How, assemble, plan_frames
from tests.support.imagekit import Made, make_tables

# A few distinct block contents, so that random images share, move and repeat blocks.
POOL = [bytes(BLOCK)] + [hashlib.sha256(bytes([i])).digest() * (BLOCK // 32) for i in range(1, 8)]


def image_from(tokens: list[int], tail: int = 0) -> bytes:
    data = b"".join(POOL[t] for t in tokens)
    return data + POOL[1][:tail] if tail else data


def view_of(disk: bytes | bytearray) -> DiskView:
    return DiskView(b"".join(block_hash(bytes(disk[k:k + BLOCK])) for k in range(0, len(disk), BLOCK)))


class Model:
    """Executes a plan on a bytearray disk, the way the writer does, checking every read."""

    def __init__(self, chain: list[Made], disk: bytearray) -> None:
        self.chain = chain
        self.disk = disk
        self.fetched = 0
        self.fallbacks = 0

    def stored(self, level: int, q: int) -> bytes:
        self.fetched += self.chain[level].frames.lengths[q]
        return self.chain[level].stored[q]

    def run(self, plan) -> None:
        image = self.chain[0]
        fsize = plan.frame_size
        written: set[int] = set()
        for action in plan.actions():
            j = action.frame
            start, length = j * fsize, plan.frame_length(j)
            expected = image.frames[j].sha256
            if action.how == How.KEEP:
                assert hashlib.sha256(self.disk[start:start + length]).digest() == expected
                continue
            if action.how == How.HOLE:
                if not plan.target_zero:
                    self.disk[start:start + length] = bytes(length)
                    written.add(j)
                assert self.disk[start:start + length] == bytes(length)
                continue

            def read(offset: int, count: int, j=j) -> bytes:
                for r in range(offset // fsize, (offset + count - 1) // fsize + 1):
                    assert r == j or r not in written, f"frame {j} reads region {r} after it was overwritten"
                return bytes(self.disk[offset:offset + count])

            data = self.build(action.assembly, j, length, read)
            if hashlib.sha256(data).digest() != expected:  # a wrong hint: the writer's fallback
                self.fallbacks += 1
                fallback = action.assembly.fallback if action.assembly else None
                data = self.build(fallback, j, length, read)
            assert hashlib.sha256(data).digest() == expected
            self.disk[start:start + length] = data
            written.add(j)

    def build(self, asm, j: int, length: int, read) -> bytes:
        if asm is None:
            return self.stored(0, j)
        return bytes(assemble(asm, length, read, [self.stored(level, q) for level, q in asm.remote]))


tokens = st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=24)


@st.composite
def old_and_new(draw):
    old = draw(tokens)
    new = list(old)
    for _ in range(draw(st.integers(0, 6))):  # moves, duplicates, changes, zeroes
        op = draw(st.sampled_from(("move", "dup", "change", "zero", "insert", "delete")))
        i = draw(st.integers(0, len(new) - 1))
        j = draw(st.integers(0, len(new) - 1))
        if op == "move":
            new.insert(j, new.pop(i))
        elif op == "dup":
            new[j] = new[i]
        elif op == "change":
            new[i] = draw(st.integers(1, len(POOL) - 1))
        elif op == "zero":
            new[i] = 0
        elif op == "insert":
            new.insert(i, draw(st.integers(0, len(POOL) - 1)))
        elif len(new) > 1:
            new.pop(i)
    return old, new


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old_and_new(), st.sampled_from([BLOCK, 2 * BLOCK, 4 * BLOCK]), st.integers(0, BLOCK - 1),
       st.booleans(), st.booleans(), st.randoms(use_true_random=False))
def test_a_plan_rebuilds_the_new_image_in_place(pair, frame_size, tail, know_disk, use_done, rnd) -> None:
    old_tokens, new_tokens = pair
    new = make_tables(image_from(new_tokens, tail), frame_size)
    old = image_from(old_tokens)
    disk = bytearray(old + bytes(max(0, len(new.data) - len(old))))  # the disk is at least the image
    n = new.manifest.frame_count
    right = [j for j in range(n) if disk[j * frame_size:(j + 1) * frame_size][:len(new.data) - j * frame_size]
             == new.data[j * frame_size:(j + 1) * frame_size]]
    done = {j for j in right if use_done and rnd.random() < 0.7}
    view = view_of(disk) if know_disk else None
    plan = plan_frames([new], done=done, disk=view)
    assert sorted(plan.order) == list(range(n))

    model = Model([new], disk)
    model.run(plan)
    assert bytes(disk[:len(new.data)]) == new.data
    assert model.fallbacks == 0  # a true view never misleads
    changed = sum(new.frames.lengths[j] for j in range(n) if j not in done)
    assert model.fetched == plan.totals.fetch <= changed
    if not know_disk:
        assert model.fetched == changed


@settings(max_examples=200, deadline=None)
@given(old_and_new(), st.sampled_from([BLOCK, 2 * BLOCK, 4 * BLOCK]), st.randoms(use_true_random=False))
def test_a_wrong_view_costs_fetches_never_a_wrong_byte(pair, frame_size, rnd) -> None:
    old_tokens, new_tokens = pair
    new = make_tables(image_from(new_tokens), frame_size)
    disk = bytearray(image_from(old_tokens) + bytes(len(new.data)))
    lie = bytearray(view_of(disk).hashes)
    for k in range(len(lie) // 8):  # claim other contents for some blocks, or ignorance
        if rnd.random() < 0.3:
            lie[8 * k:8 * k + 8] = rnd.choice([UNKNOWN, block_hash(rnd.choice(POOL))])
    plan = plan_frames([new], disk=DiskView(bytes(lie)))
    model = Model([new], disk)
    model.run(plan)
    assert bytes(disk[:len(new.data)]) == new.data


@settings(max_examples=200, deadline=None)
@given(old_and_new(), st.sampled_from([BLOCK, 2 * BLOCK, 4 * BLOCK]), st.sampled_from(["base", "other", "zero"]))
def test_a_differencing_image_over_its_base(pair, frame_size, on_disk) -> None:
    base_tokens, new_tokens = pair
    base = make_tables(image_from(base_tokens), frame_size, name="base")
    new = make_tables(image_from(new_tokens), frame_size, base=base, name="new")
    size = max(len(base.data), len(new.data))
    if on_disk == "base":
        disk = bytearray(base.data + bytes(size - len(base.data)))
    elif on_disk == "other":
        disk = bytearray(image_from(list(reversed(base_tokens))) + bytes(size))
    else:
        disk = bytearray(size)
    view = view_of(disk) if on_disk != "zero" else None
    plan = plan_frames([new, base], disk=view, target_zero=on_disk == "zero")
    model = Model([new, base], disk)
    model.run(plan)
    assert bytes(disk[:len(new.data)]) == new.data
    # Reading the disk never costs more fetching than not reading it.
    assert plan.totals.fetch <= plan_frames([new, base]).totals.fetch
    if on_disk == "base" and not plan.converted:
        # Only the packed blocks: the rest is on the disk (unless blocks swapped places, a cycle
        # that costs the fetch of base frames).
        assert plan.totals.fetch <= sum(new.frames.lengths[j] for j in range(new.manifest.frame_count))


def test_a_base_of_a_base_is_followed() -> None:
    a = make_tables(image_from([1, 2, 3, 4, 5, 6, 7, 1]), 2 * BLOCK, name="a")
    b = make_tables(image_from([1, 2, 3, 4, 6, 5, 0, 2]), 2 * BLOCK, base=a, name="b")
    c = make_tables(image_from([2, 1, 3, 4, 6, 5, 7, 7]), 2 * BLOCK, base=b, name="c")
    disk = bytearray(len(c.data))
    plan = plan_frames([c, b, a], target_zero=True)
    Model([c, b, a], disk).run(plan)
    assert bytes(disk) == c.data


def test_a_block_missing_from_the_base_is_a_precise_error() -> None:
    base = make_tables(image_from([1, 2]), BLOCK, name="base")
    new = make_tables(image_from([2, 1]), BLOCK, base=base, name="new")
    other = make_tables(image_from([3, 4]), BLOCK, name="other")
    with pytest.raises(ManifestError, match=r"image new 1: block 0 \(frame 0\) is not in its base image other 1"):
        plan_frames([new, other])


def test_swapped_frames_break_the_cycle_with_one_fetch() -> None:
    old = image_from([1, 2, 3, 4])
    new = make_tables(image_from([3, 4, 1, 2]), 2 * BLOCK)
    disk = bytearray(old)
    plan = plan_frames([new], disk=view_of(disk))
    assert plan.converted == 1
    assert [How(h) for h in plan.how] == [How.FETCH, How.LOCAL]
    assert list(plan.order) == [1, 0]  # frame 1 copies from frame 0's region before frame 0 is fetched
    Model([new], disk).run(plan)
    assert bytes(disk) == new.data


def test_a_moved_block_is_read_before_its_region_is_overwritten() -> None:
    old = image_from([1, 2, 3, 4, 5, 6])
    new = make_tables(image_from([7, 7, 1, 2, 5, 6]), 2 * BLOCK)  # frame 1 takes frame 0's blocks
    disk = bytearray(old)
    plan = plan_frames([new], disk=view_of(disk))
    assert [How(plan.how[j]) for j in range(3)] == [How.FETCH, How.LOCAL, How.LOCAL]
    assert list(plan.order) == [1, 0, 2]
    assert plan.totals.local == 4 * BLOCK and plan.totals.fetch == new.frames.lengths[0]
    Model([new], disk).run(plan)
    assert bytes(disk) == new.data


def test_blocks_are_copied_from_regions_that_are_not_rewritten_first() -> None:
    old = image_from([1, 2, 1, 2])
    new = make_tables(image_from([3, 3, 1, 2]), 2 * BLOCK)  # 1, 2 are both in frame 0 and frame 1
    plan = plan_frames([new], done={1}, disk=view_of(old))
    asm = plan.assemblies.get(0)
    assert asm is None and plan.how[0] == How.FETCH
    new2 = make_tables(image_from([1, 2, 9 % len(POOL), 3]), 2 * BLOCK)
    plan2 = plan_frames([new2], disk=view_of(image_from([5, 6, 1, 2])))
    # frame 0 needs 1, 2: found in frame 1's region, which is rewritten, so frame 0 goes first
    assert list(plan2.order) == [0, 1] and plan2.how[0] == How.LOCAL
    assert [o for o in plan2.assemblies[0].disk_offsets()] == [2 * BLOCK, 3 * BLOCK]
    assert plan2.assemblies[0].kinds[0] == DISK


def test_a_zero_target_skips_holes_and_reads_nothing() -> None:
    new = make_tables(image_from([1, 0, 0, 0, 2, 0]), 2 * BLOCK)
    plan = plan_frames([new], disk=view_of(bytes(6 * BLOCK)), target_zero=True)
    assert [How(h) for h in plan.how] == [How.FETCH, How.HOLE, How.FETCH]
    assert not plan.writes(1) and plan.totals.holes == 2 * BLOCK


def test_the_block_finder_prefers_low_ranks_and_reports_absence() -> None:
    hashes = b"".join(block_hash(POOL[t]) for t in [1, 2, 1, 3])
    finder = BlockFinder([key_of(block_hash(POOL[1])), key_of(block_hash(POOL[4]))])
    finder.scan(hashes, rank=lambda k: 0 if k >= 2 else 1)
    assert finder.find(key_of(block_hash(POOL[1]))) == 2
    assert finder.find(key_of(block_hash(POOL[4]))) == -1
    assert finder.find(key_of(block_hash(POOL[2]))) == -1  # not wanted: not recorded
    many = BlockFinder(range(1, 100_000))
    many.scan(b"".join(k.to_bytes(8, "little") for k in range(50_000, 50_010)))
    assert many.find(50_003) == 3 and many.find(7) == -1 and many.found == 10
