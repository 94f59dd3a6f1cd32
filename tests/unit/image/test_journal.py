"""The write journal: what a rerun may trust, after a crash (same boot) or a power loss (another boot)."""

from __future__ import annotations

from peagent.image import journal as journal_module
from peagent.image.journal import MAGIC, Journal, replay, runs

HEAD = f"{MAGIC}\nimage abc\ntarget file /t inode 1:2\nboot B1\n"


def test_same_boot_trusts_every_write_another_boot_only_the_flushed_ones() -> None:
    text = HEAD + "W 0-3\nW 4-7\nS\nW 8-9\nW 12-12\n"
    assert replay(text, "abc", "file /t inode 1:2", "B1") == (set(range(8)), {8, 9, 12})
    assert replay(text, "abc", "file /t inode 1:2", "B2") == (set(range(8)), set())


def test_another_image_or_target_is_ignored_and_a_torn_line_too() -> None:
    text = HEAD + "W 0-3\nS\nW 4-"
    assert replay(text, "other", "file /t inode 1:2", "B1") == (set(), set())
    assert replay(text, "abc", "file /u inode 1:3", "B1") == (set(), set())
    assert replay(text, "abc", "file /t inode 1:2", "B1") == (set(range(4)), set())
    assert replay("garbage", "abc", "x", "B1") == (set(), set())


def test_a_journal_is_replayed_rewritten_and_removed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(journal_module, "boot_id", lambda: "B1")
    path = tmp_path / "run" / "write.journal"
    j = Journal(path, "abc", "T", 100)
    assert j.done == set()
    j.written(0, 9)
    j.synced()
    j.written(10, 11)
    j.close()
    assert Journal(path, "abc", "T", 100).done == set(range(12))
    monkeypatch.setattr(journal_module, "boot_id", lambda: "B2")  # a reboot: unflushed writes are lost
    again = Journal(path, "abc", "T", 100)
    assert again.done == set(range(10))
    again.remove()
    assert not path.exists()
    assert Journal(None, "abc", "T", 100).done == set()


def test_runs() -> None:
    assert runs([0, 1, 2, 5, 7, 8]) == [(0, 2), (5, 5), (7, 8)]
