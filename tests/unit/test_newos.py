"""The deploy's OS steps around the image, without devices: the saved capture and the no-OS rule."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from peagent.errors import StateError
from peagent.inventory import Disk
from peagent.newos import Context, capture_old, finish
from peagent.state import document
from peagent.state.model import Captured, MachineState, Secret
from peagent.state.record import ImageIdentity
from peagent.state.spec import parse_state
from peagent.status import Reporter

DISK = Disk(name="vda", path="/dev/vda", size=1 << 30)
IMAGE = ImageIdentity("demo-os", "1", "sha256:" + "0" * 64)


def context(tmp_path: Path, state: dict | None, events: list) -> Context:
    spec = parse_state(state) if state is not None else None
    plan = SimpleNamespace(deployment_id="d1", state_spec=spec, state=spec.given if spec else None)
    reporter = Reporter(None)
    reporter._post = lambda event: events.append(vars(event))  # type: ignore[method-assign]
    return Context(plan, reporter, ("52:54:00:12:34:56",), None, tmp_path)  # type: ignore[arg-type]


def test_a_rerun_takes_the_capture_its_first_run_saved(tmp_path: Path) -> None:
    saved = Captured("windows", "Windows on /dev/vda3", MachineState(computer_name="WS-1",
                                                                    product_key=Secret("AAAAA-BBBBB-CCCCC-DDDDD-EEEEE")))
    document.save(saved, tmp_path / "captured-d1.json")
    events: list = []
    # No partitions to look into: the old OS is gone by now; the saved capture is all there is.
    assert capture_old(context(tmp_path, {"migrate": ["computer_name"]}, events), []) == saved
    assert events[0]["message"] == "using the state captured earlier by this deployment from Windows on /dev/vda3"


def test_nothing_is_captured_without_migrate(tmp_path: Path) -> None:
    document.save(Captured("linux", "x", MachineState(computer_name="a")), tmp_path / "captured-d1.json")
    assert capture_old(context(tmp_path, {"computer_name": "b"}, []), []) is None
    assert capture_old(context(tmp_path, None, []), []) is None


def test_an_image_without_an_os_gets_nothing_unless_the_task_gives_a_state(tmp_path: Path) -> None:
    events: list = []
    finish(context(tmp_path, None, events), DISK, IMAGE, None, "reboot", partitions=[])
    assert [e["message"] for e in events] == ["no state, record or boot entry: the written image must hold exactly "
                                              "one OS to give its state to; found none"]
    with pytest.raises(StateError, match="exactly one OS"):
        finish(context(tmp_path, {"computer_name": "b"}, []), DISK, IMAGE, None, "reboot", partitions=[])
