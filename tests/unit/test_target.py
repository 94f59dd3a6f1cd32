from __future__ import annotations

import pytest

from peagent.errors import TargetError
from peagent.hints import Hints
from peagent.inventory import Disk, Inventory, Partition
from peagent.target import select_target
from peagent.task import TargetSpec

GB = 10**9


def disk(name: str, **kw: object) -> Disk:
    kw.setdefault("size", 100 * GB)
    kw.setdefault("transport", "virtio")
    kw.setdefault("serial", name.upper())
    return Disk(name=name, path=f"/dev/{name}", **kw)  # type: ignore[arg-type]


def spec(allow: bool = False, **hints: object) -> TargetSpec:
    return TargetSpec(hints=Hints(tuple(hints.items())), allow_overwrite=allow)  # type: ignore[arg-type]


def refused(inv: Inventory, s: TargetSpec) -> str:
    with pytest.raises(TargetError) as info:
        select_target(inv, s)
    return str(info.value)


def test_the_only_eligible_disk_is_chosen_without_hints() -> None:
    pe_stick = disk("sda", transport="usb", removable=True, pe_medium=True)
    ro = disk("sdb", read_only=True)
    inv = Inventory(disks=(pe_stick, ro, disk("vda")))
    sel = select_target(inv, spec())
    assert sel.disk.name == "vda"
    assert sel.reasons == ("the only eligible disk (no hints given)",
                           "looks blank (no partition table or filesystem)")
    assert sel.excluded == (("/dev/sda", "the PE's boot medium"), ("/dev/sdb", "read-only"))


def test_several_eligible_disks_without_hints_are_refused_and_listed() -> None:
    msg = refused(Inventory(disks=(disk("vda"), disk("nvme0n1", transport="nvme"))), spec())
    assert msg.startswith("2 disks are eligible (no hints), refusing to guess: /dev/vda (100.0 GB virtio")
    assert "/dev/nvme0n1 (100.0 GB nvme" in msg
    assert msg.endswith("add target.hints (e.g. serial) to name one")


def test_hints_choose_and_ambiguity_is_refused() -> None:
    inv = Inventory(disks=(disk("vda", model="M1"), disk("vdb", model="M1"), disk("vdc", model="M2")))
    assert select_target(inv, spec(model="M2")).disk.name == "vdc"
    assert select_target(inv, spec(name="/dev/vdb")).disk.name == "vdb"
    assert select_target(inv, spec(name="vdb")).disk.name == "vdb"
    msg = refused(inv, spec(model="M1"))
    assert msg.startswith("2 disks are eligible (model s== 'M1'), refusing to guess")
    assert msg.endswith("narrow the hints")


def test_size_hint_is_whole_gib() -> None:
    inv = Inventory(disks=(disk("vda", size=64 << 30), disk("vdb", size=(128 << 30) + 5)))
    assert select_target(inv, spec(size=128)).disk.name == "vdb"


def test_no_match_lists_every_disk_with_its_reason() -> None:
    inv = Inventory(disks=(disk("vda"), disk("sdb", in_use=("/dev/sdb1 is mounted on /",))))
    msg = refused(inv, spec(serial="NOPE"))
    assert msg == ("no disk is eligible as the target (serial s== 'NOPE'). Disks seen: "
                   "/dev/vda: does not match serial s== 'NOPE'; /dev/sdb: in use: /dev/sdb1 is mounted on /")


def test_removable_and_usb_disks_only_when_named() -> None:
    stick = disk("sdc", transport="usb", serial="STICK")
    inv = Inventory(disks=(stick,))
    assert "removable or USB (name it in target.hints to use it)" in refused(inv, spec())
    assert select_target(inv, spec(serial="STICK")).disk.name == "sdc"


def test_the_pe_medium_is_refused_even_when_named() -> None:
    inv = Inventory(disks=(disk("sda", transport="usb", serial="PE", pe_medium=True),))
    assert refused(inv, spec(serial="PE")).endswith("Disks seen: /dev/sda: the PE's boot medium")


def test_data_on_the_chosen_disk_is_a_reason_not_a_refusal() -> None:
    # Whether it may be destroyed is the plan's decision (tests/unit/test_plan.py).
    used = disk("vda", partition_table="gpt", partitions=(
        Partition(number=1, path="/dev/vda1", start=1 << 20, size=GB, fstype="ext4"),))
    sel = select_target(Inventory(disks=(used,)), spec())
    assert sel.reasons[-1] == "holds data (a gpt partition table, ext4 on partition 1)"


def test_no_disks_at_all() -> None:
    assert refused(Inventory(), spec()) == "no disk is eligible as the target (no hints). Disks seen: no disks at all"
