"""Block devices as the inventory would show them, read with other tools (sfdisk, blkid).

The inventory leaves loop devices out and takes filesystems from udev's database, which a test
host without a udev daemon does not keep: tests that plan against a loop device read it here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from peagent.disk.partition import partition_path
from peagent.inventory import Disk, Partition


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def table(device: str) -> dict:
    return json.loads(run("sfdisk", "--json", device))["partitiontable"]


def inspect(device: str) -> Disk:
    """The device as the inventory would show it, read with sfdisk (table) and blkid (filesystems)."""
    size = int(run("blockdev", "--getsize64", device))
    sector = int(run("blockdev", "--getss", device))
    try:
        t = table(device)
    except subprocess.CalledProcessError:  # no partition table
        return Disk(name=os.path.basename(device), path=device, size=size, logical_sector_size=sector)
    parts = []
    for p in t["partitions"]:
        number = int(re.search(r"(\d+)$", p["node"]).group(1))  # type: ignore[union-attr]
        start, length = p["start"] * sector, p["size"] * sector
        probe = subprocess.run(["blkid", "-p", "-o", "export", "-O", str(start), "-S", str(length), device],
                               capture_output=True, text=True).stdout
        fs = dict(line.split("=", 1) for line in probe.splitlines() if "=" in line)
        kind = p["type"].lower() if t["label"] == "gpt" else f"0x{int(p['type'], 16):x}"
        parts.append(Partition(number=number, path=partition_path(device, number), start=start, size=length,
                               fstype=fs.get("TYPE"), label=fs.get("LABEL"), uuid=fs.get("UUID"),
                               type_guid=kind, name=p.get("name")))
    return Disk(name=os.path.basename(device), path=device, size=size, logical_sector_size=sector,
                partition_table={"dos": "dos", "gpt": "gpt"}[t["label"]], partitions=tuple(parts))


@contextlib.contextmanager
def mounted(device: str, where: Path) -> Iterator[Path]:
    """``device`` mounted read-write on ``where`` (made if missing) while the block runs."""
    where.mkdir(exist_ok=True)
    run("mount", device, str(where))
    try:
        yield where
    finally:
        run("umount", str(where))
