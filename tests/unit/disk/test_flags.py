"""The flag table of peagent.disk.layout against pyparted itself: on an image file (no root needed),
each flag is set through pyparted and the table read back with sfdisk, so that the layout's claims
(which flags exist per table type, which ones rewrite the type and to what) are libparted's own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import parted
import pytest

from peagent.disk.layout import FLAG_TYPES, LIBPARTED_FLAGS

DEFAULT_TYPE = {"gpt": "0fc63daf-8483-4772-8e79-3d69d8477de4", "msdos": "0x83"}


def set_flag(image: Path, table: str, flag: str | None) -> dict:
    """A one-partition table with the flag set (if libparted offers it), as sfdisk reads it back."""
    device = parted.getDevice(str(image))
    disk = parted.freshDisk(device, table)
    geometry = parted.Geometry(device, start=2048, length=2048)
    partition = parted.Partition(disk=disk, type=parted.PARTITION_NORMAL, geometry=geometry)
    disk.addPartition(partition, parted.Constraint(exactGeom=geometry))
    if flag is not None:
        partition.setFlag(FLAGS[flag])
    disk.commitToDevice()
    out = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["partitiontable"]["partitions"][0]


FLAGS = {name: number for number, name in parted.partitionFlag.items()}


def test_the_layout_knows_every_libparted_flag() -> None:
    assert set(LIBPARTED_FLAGS) == set(FLAGS)


@pytest.mark.parametrize("table", ["gpt", "msdos"])
def test_flags_offered_per_table_are_libparteds(tmp_path, table) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    with image.open("r+b") as f:
        f.truncate(8 << 20)
    device = parted.getDevice(str(image))
    disk = parted.freshDisk(device, table)
    geometry = parted.Geometry(device, start=2048, length=2048)
    partition = parted.Partition(disk=disk, type=parted.PARTITION_NORMAL, geometry=geometry)
    disk.addPartition(partition, parted.Constraint(exactGeom=geometry))
    offered = {name for name, number in FLAGS.items() if partition.isFlagAvailable(number)}
    # On msdos libparted also offers hidden and lba, which the layout refuses (type-byte variants).
    refused = {"hidden", "lba"} if table == "msdos" else set()
    assert offered == set(FLAG_TYPES[table]) | refused


@pytest.mark.parametrize(("table", "flag"), [(t, f) for t in ("gpt", "msdos") for f in FLAG_TYPES[t]])
def test_each_flag_sets_the_type_the_layout_says(tmp_path, table, flag) -> None:
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(8 << 20)
    entry = set_flag(image, table, flag)
    found = entry["type"].lower()
    if table == "msdos":
        found = f"0x{int(found, 16):02x}"
    implied = FLAG_TYPES[table][flag]
    assert found == (implied or DEFAULT_TYPE[table])
    if implied is None:  # a bit beside the type
        beside = {"hidden": ("attrs", "RequiredPartition"), "legacy_boot": ("attrs", "LegacyBIOSBootable"),
                  "boot": ("bootable", True)}[flag]
        assert entry.get(beside[0]) == beside[1]
