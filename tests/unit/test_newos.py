"""The deploy's OS steps around the image, without devices: the saved capture, the no-OS rule, the record."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from peagent import newos
from peagent.errors import StateError
from peagent.inventory import Disk, Partition
from peagent.newos import Context, capture_old, finish
from peagent.state import document
from peagent.state.model import Captured, MachineState, Secret
from peagent.state.record import DeploymentRecord, ImageIdentity
from peagent.state.spec import parse_state
from peagent.status import Reporter, validate_event

DISK = Disk(name="vda", path="/dev/vda", size=1 << 30)
IMAGE = ImageIdentity("demo-os", "1", "sha256:" + "0" * 64)
URL = "http://dp/api/v1/events"


def context(tmp_path: Path, state: dict | None, *, token: Secret | None = None) -> Context:
    spec = parse_state(state) if state is not None else None
    plan = SimpleNamespace(deployment_id="d1", state_spec=spec, state=spec.given if spec else None, drivers=None)
    reporter = Reporter(None)
    reporter.deployment_id = "d1"
    return Context(plan, reporter, ("52:54:00:12:34:56",), URL, tmp_path, status_token=token)  # type: ignore[arg-type]


def messages(ctx: Context) -> list[str]:
    return [e["message"] for e in ctx.reporter.events()]


def test_a_rerun_takes_the_capture_its_first_run_saved(tmp_path: Path) -> None:
    saved = Captured("windows", "Windows on /dev/vda3", MachineState(computer_name="WS-1",
                                                                    product_key=Secret("AAAAA-BBBBB-CCCCC-DDDDD-EEEEE")))
    document.save(saved, tmp_path / "captured-d1.json")
    ctx = context(tmp_path, {"migrate": ["computer_name"]})
    # No partitions to look into: the old OS is gone by now; the saved capture is all there is.
    assert capture_old(ctx, []) == saved
    assert messages(ctx) == ["using the state captured earlier by this deployment from Windows on /dev/vda3"]


def test_nothing_is_captured_without_migrate(tmp_path: Path) -> None:
    document.save(Captured("linux", "x", MachineState(computer_name="a")), tmp_path / "captured-d1.json")
    assert capture_old(context(tmp_path, {"computer_name": "b"}), []) is None
    assert capture_old(context(tmp_path, None), []) is None


def test_an_image_without_an_os_gets_nothing_unless_the_task_gives_a_state(tmp_path: Path) -> None:
    ctx = context(tmp_path, None)
    finish(ctx, DISK, IMAGE, None, "reboot", partitions=[])
    assert messages(ctx) == ["no state, record or boot entry: the written image must hold exactly one OS to give its "
                             "state to; found none"]
    with pytest.raises(StateError, match="exactly one OS"):
        finish(context(tmp_path, {"computer_name": "b"}), DISK, IMAGE, None, "reboot", partitions=[])


def test_the_record_carries_the_events_so_far_and_the_first_boot_gets_the_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Partition(name="vda2", path="/dev/vda2", number=2, start=1 << 20, size=1 << 29, fstype="ext4")
    given: dict[str, Any] = {}

    def give_state(partition: Partition, kind: str, state: MachineState, record: DeploymentRecord, *,
                   status_url: str | None, token: Secret | None, parent: Path | None = None) -> list[str]:
        given.update(record=record, status_url=status_url, token=token)
        return ["hostname ws-1"]

    monkeypatch.setattr(newos, "find_new_os", lambda partitions, parent: (root, "linux", "Debian 12"))
    monkeypatch.setattr(newos, "give_state", give_state)
    token = Secret("tok-0123456789abcdef")
    ctx = context(tmp_path, {"computer_name": "ws-1"}, token=token)
    ctx.reporter.emit("write", "demo-os -> /dev/vda")
    finish(ctx, DISK, IMAGE, None, "reboot", partitions=[root])
    record: DeploymentRecord = given["record"]
    assert (given["status_url"], given["token"]) == (URL, token)
    # Every event up to the record's writing, as journaled (and posted): schema 1, in order.
    assert [e["phase"] for e in record.events] == ["write", "state", *(["state"] * (len(record.events) - 2))]
    assert list(record.events) == ctx.reporter.events()[:len(record.events)]
    assert [e["seq"] for e in record.events] == list(range(1, len(record.events) + 1))
    for event in record.events:
        assert validate_event(event) == event
    assert DeploymentRecord.from_json(record.to_json()).events == record.events
    assert "tok-0123456789abcdef" not in record.to_json().decode()
    assert messages(ctx)[-2:] == ["hostname ws-1", "boot entries left alone: not running in the PE (the firmware here "
                                  "is not the target's)"]
