"""The event journal: a round trip, numbering continued by a rerun, the delivered count, torn lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from peagent.status.journal import Journal, JournalError


def event(seq: int) -> dict:
    return {"schema": 1, "id": f"event-{seq:04d}", "seq": seq, "message": f"m{seq}"}


def test_a_journal_round_trips_through_its_files(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "d1")
    assert journal.next_seq == 1
    for seq in (1, 2, 3):
        journal.append(event(seq))
    journal.mark_sent(2)
    assert (tmp_path / "events-d1.jsonl").read_text().count("\n") == 3
    assert (tmp_path / "events-d1.sent").read_text() == "2\n"
    again = Journal(tmp_path, "d1")
    assert again.events() == [event(1), event(2), event(3)]
    assert again.sent() == 2 and again.unsent() == [event(3)]


def test_a_rerun_continues_the_numbering(tmp_path: Path) -> None:
    first = Journal(tmp_path, "d1")
    first.append(event(1))
    first.append(event(2))
    rerun = Journal(tmp_path, "d1")
    assert rerun.next_seq == 3
    rerun.append(event(rerun.next_seq))
    assert [e["seq"] for e in Journal(tmp_path, "d1").events()] == [1, 2, 3]
    assert Journal(tmp_path, "other").next_seq == 1  # another deployment, its own files


def test_the_sent_count_never_moves_back_nor_past_the_end(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "d1")
    journal.append(event(1))
    journal.append(event(2))
    journal.mark_sent(2)
    journal.mark_sent(1)
    assert journal.sent() == 2
    journal.mark_sent(9)
    assert journal.sent() == 2
    assert journal.unsent() == []


def test_unsent_is_limited_and_in_order(tmp_path: Path) -> None:
    journal = Journal(None, "d1")
    for seq in range(1, 6):
        journal.append(event(seq))
    journal.mark_sent(1)
    assert [e["seq"] for e in journal.unsent(2)] == [2, 3]
    assert [e["seq"] for e in journal.unsent()] == [2, 3, 4, 5]


def test_a_line_torn_by_a_crash_is_dropped(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "d1")
    journal.append(event(1))
    with (tmp_path / "events-d1.jsonl").open("a") as f:
        f.write('{"schema": 1, "id": "half')
    again = Journal(tmp_path, "d1")
    assert again.events() == [event(1)] and again.next_seq == 2
    again.append(event(2))
    assert [e["seq"] for e in Journal(tmp_path, "d1").events()] == [1, 2]


def test_a_garbled_sent_count_replays_everything(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "d1")
    journal.append(event(1))
    (tmp_path / "events-d1.sent").write_text("x\n")
    assert Journal(tmp_path, "d1").sent() == 0


def test_a_corrupt_journal_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "events-d1.jsonl").write_text('{"seq": 1}\nnot json\n')
    with pytest.raises(JournalError, match=r"events-d1.jsonl line 2: not an event .*delete the file"):
        Journal(tmp_path, "d1")


def test_the_event_stays_in_memory_when_the_disk_fails(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "d1")
    (tmp_path / "events-d1.jsonl").mkdir()  # appending to a directory fails
    with pytest.raises(JournalError, match=r"cannot append to the event journal .*events-d1.jsonl"):
        journal.append(event(1))
    assert journal.events() == [event(1)] and journal.next_seq == 2
