"""Why a disk is in use, from its holders and the mount table (the parts testable without udev)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from peagent.inventory.disks import _in_use


def test_holders_and_mounts_are_reasons(tmp_path: Path) -> None:
    (tmp_path / "holders" / "dm-0").mkdir(parents=True)  # LVM, dm-crypt, multipath: device-mapper holds it
    (tmp_path / "holders" / "md127").mkdir()  # an MD array holds it
    dev = SimpleNamespace(sys_path=str(tmp_path))
    mounts = {"/dev/sda": ["/", "/srv/data"], "/dev/sdb": ["swap"]}
    assert _in_use(dev, "/dev/sda", mounts) == ["/dev/sda is mounted on /, /srv/data", "/dev/sda is held by dm-0",
                                                 "/dev/sda is held by md127"]
    assert _in_use(SimpleNamespace(sys_path=str(tmp_path / "none")), "/dev/sdb", mounts) == \
        ["/dev/sdb is mounted on swap"]
    assert _in_use(SimpleNamespace(sys_path=str(tmp_path / "none")), "/dev/sdc", mounts) == []
