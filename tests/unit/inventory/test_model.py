"""Inventories captured in the QEMU bench (tests/unit/fixtures) read back, and decided upon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peagent.errors import TargetError
from peagent.hints import Hints, parse_hints
from peagent.inventory import from_dict
from peagent.plan import make_plan
from peagent.target import select_target
from peagent.task import TargetSpec, parse_task

FIXTURES = Path(__file__).parents[1] / "fixtures"
# Booted from the PE's USB stick (UEFI) with a blank virtio and NVMe disk and a SATA disk that
# holds a GPT and an ext4 filesystem: captured with `peagent inventory --json` in the PE.
UEFI_USB = json.loads((FIXTURES / "inventory-qemu-uefi-usb-boot.json").read_text())


def contains(big: object, small: object) -> bool:
    """Every field of ``small`` is in ``big`` with the same value (fields are only ever added)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(contains, big, small))
    return big == small


def test_the_capture_reads_back_unchanged() -> None:
    inv = from_dict(UEFI_USB)
    assert contains(json.loads(json.dumps(inv.to_dict())), UEFI_USB)
    assert not contains({"a": 1}, {"a": 2}) and not contains({}, {"a": 1})
    stick = next(d for d in inv.disks if d.serial == "PESTICK01")
    assert stick.pe_medium and stick.transport == "usb"
    assert [(p.number, p.fstype, p.label) for p in stick.partitions] == [(1, "vfat", "PEAGENT")]
    sata = next(d for d in inv.disks if d.transport == "sata")
    assert sata.data_found() == ["a gpt partition table", "ext4 on partition 1"]


def test_without_hints_the_choice_is_refused_and_the_stick_never_offered() -> None:
    with pytest.raises(TargetError) as info:
        select_target(from_dict(UEFI_USB), TargetSpec(hints=Hints()))
    message = str(info.value)
    assert message.startswith("3 disks are eligible (no hints), refusing to guess")
    assert "PESTICK01" not in message


def path_of(serial: str) -> str:
    # Kernel names are not stable (sda and sdb swap between boots): serials are.
    return next(d["path"] for d in UEFI_USB["disks"] if d["serial"] == serial)


@pytest.mark.parametrize("serial", ["VIRTIO0001", "NVME0001"])
def test_hints_pick_the_named_disk(serial: str) -> None:
    sel = select_target(from_dict(UEFI_USB), TargetSpec(hints=parse_hints({"serial": serial}, "hints")))
    assert sel.disk.path == path_of(serial)
    assert (path_of("PESTICK01"), "the PE's boot medium") in sel.excluded


def test_the_disk_with_data_is_refused_unless_allowed() -> None:
    doc = {"version": 1, "dps": ["http://dp/"], "target": {"hints": {"serial": "SATA0001"}},
           "image": {"url": "x.img", "sha256": "0" * 64}}
    with pytest.raises(TargetError, match=r"holds data this deploy would destroy \(a gpt partition table, "
                                          r"ext4 on partition 1\)"):
        make_plan(parse_task(json.dumps(doc)), from_dict(UEFI_USB))
    doc["target"]["allow_overwrite"] = True
    assert make_plan(parse_task(json.dumps(doc)), from_dict(UEFI_USB)).target.disk.path == path_of("SATA0001")
