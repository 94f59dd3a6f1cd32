"""The deployment record: a round trip, and the skip decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from peagent.inventory import Partition
from peagent.state.record import (
    DeploymentRecord,
    FoundRecord,
    ImageIdentity,
    already_deployed,
    fit_events,
    new_record,
    read_record,
)

IMAGE = ImageIdentity("demo-os", "1.2", "sha256:" + "ab" * 32)


def test_a_record_round_trips_and_keeps_no_secret() -> None:
    record = new_record("wave-1", IMAGE, status_url="http://dp/status", state={"computer_name": "WS-1",
                                                                              "admin_password": "<secret>"})
    back = DeploymentRecord.from_json(record.to_json())
    assert back == record
    assert back.deployed_at.endswith("Z") and back.agent_version


@pytest.mark.parametrize("data", [b"{}", b'{"format": 2}', b"not json", b'{"format": 1, "image": 3}'])
def test_what_is_not_a_record_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"not a deployment record|format"):
        DeploymentRecord.from_json(data)


def test_the_record_is_found_where_each_os_keeps_it(tmp_path: Path) -> None:
    record = new_record("d1", IMAGE, status_url=None, state={})
    linux = tmp_path / "linux" / "var/lib/peagent"
    linux.mkdir(parents=True)
    (linux / "deployment.json").write_bytes(record.to_json())
    assert read_record(tmp_path / "linux") == record
    windows = tmp_path / "windows" / "PROGRAMDATA/peagent"  # Windows ignores case, and so does the lookup
    windows.mkdir(parents=True)
    (windows / "deployment.json").write_bytes(record.to_json())
    assert read_record(tmp_path / "windows") == record
    assert read_record(tmp_path) is None


def test_a_record_reached_through_a_symlink_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/deployment.json").write_bytes(new_record("d1", IMAGE, status_url=None, state={}).to_json())
    (tmp_path / "var/lib").mkdir(parents=True)
    (tmp_path / "var/lib/peagent").symlink_to(tmp_path / "elsewhere")
    assert read_record(tmp_path) is None


def test_skip_only_on_the_same_digest() -> None:
    part = Partition(number=2, path="/dev/vda2", start=0, size=1)
    same = FoundRecord(part, new_record("old", IMAGE, status_url=None, state={}))
    other = FoundRecord(part, new_record("old", ImageIdentity("demo-os", "1.2", "sha256:" + "cd" * 32),
                                         status_url=None, state={}))
    assert already_deployed([other, same], IMAGE) is same
    assert already_deployed([other, FoundRecord(part, None, "broken")], IMAGE) is None


def ev(seq: int, phase: str = "write", done: int | None = None, size: int = 10) -> dict:
    return {"seq": seq, "phase": phase, "done": done, "message": "m" * size}


def test_a_record_keeps_the_events_it_is_given() -> None:
    events = [ev(1, "task"), ev(2, "write", done=5)]
    record = new_record("d1", IMAGE, status_url=None, state={}, events=events)
    assert record.events == tuple(events)
    assert DeploymentRecord.from_json(record.to_json()).events == tuple(events)


def test_too_many_events_lose_the_intermediate_progress_first_then_the_oldest() -> None:
    events = [ev(1, "task"), *(ev(i, "write", done=i, size=1000) for i in range(2, 12)), ev(12, "verify")]
    assert fit_events(events, 1 << 20) == tuple(events)
    kept = fit_events(events, 3000)
    assert [e["seq"] for e in kept] == [1, 11, 12]  # the transfer's last progress stays
    assert [e["seq"] for e in fit_events(events, 1200)] == [11, 12]
