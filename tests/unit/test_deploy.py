from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from peagent.deploy import load_task, task_lookup_refs
from peagent.errors import TaskError
from peagent.fetch import NotFoundError
from peagent.inventory import Inventory, Nic
from peagent.server.dp import DPServer, serve

INV = Inventory(nics=(Nic(name="eth0", mac="52:54:00:00:00:01"), Nic(name="eth1", mac="52:54:00:00:00:02")))


def task_doc(name: str) -> str:
    return json.dumps({"version": 1, "id": name, "image": {"url": "x.img", "sha256": "c" * 64}})


@pytest.fixture
def dp(tmp_path: Path) -> Iterator[DPServer]:
    (tmp_path / "tasks").mkdir()
    server = serve(tmp_path, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_lookup_order_is_each_mac_then_default() -> None:
    assert task_lookup_refs(INV) == ["tasks/52-54-00-00-00-01.json", "tasks/52-54-00-00-00-02.json",
                                     "tasks/default.json"]


def test_a_machine_task_wins_over_the_default(dp: DPServer, tmp_path: Path) -> None:
    (tmp_path / "tasks" / "default.json").write_text(task_doc("default"))
    assert load_task(None, (dp.url,), INV)[0].deployment_id == "default"
    (tmp_path / "tasks" / "52-54-00-00-00-02.json").write_text(task_doc("second-nic"))
    task, source = load_task(None, (dp.url,), INV)
    assert task.deployment_id == "second-nic"
    assert source == dp.url + "tasks/52-54-00-00-00-02.json"


def test_no_task_anywhere(dp: DPServer) -> None:
    with pytest.raises(NotFoundError, match=r"no task for this machine on the DPs \(looked for tasks/52-54"):
        load_task(None, (dp.url,), INV)


def test_a_named_task_that_is_missing_is_not_replaced_by_the_default(dp: DPServer, tmp_path: Path) -> None:
    (tmp_path / "tasks" / "default.json").write_text(task_doc("default"))
    with pytest.raises(NotFoundError):
        load_task("tasks/special.json", (dp.url,), INV)


def test_a_local_task_file(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text(task_doc("local"))
    assert load_task(str(tmp_path / "t.json"), (), INV)[0].deployment_id == "local"


def test_neither_task_nor_dps() -> None:
    with pytest.raises(TaskError) as info:
        load_task(None, (), INV)
    assert info.value.field == "peagent.task"
