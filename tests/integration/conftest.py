"""Shared fixtures of the integration tests: loop devices over sparse files."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``loop(size, backing=None)`` makes a loop device (with partition scanning) over a sparse file
    of ``size`` bytes, or over ``backing``; every one is detached afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices)")
    backings: list[Path] = []

    def make(size: int, backing: Path | None = None) -> str:
        backing = backing or tmp_path / f"disk{len(backings)}.img"
        if not backing.exists():
            with backing.open("wb") as f:
                f.truncate(size)
        backings.append(backing)
        return subprocess.run(["losetup", "--find", "--show", "--partscan", str(backing)],
                              capture_output=True, text=True, check=True).stdout.strip()

    yield make
    # Detach by backing file: a device name a test detached itself may belong to someone else now.
    for backing in backings:
        listed = subprocess.run(["losetup", "--associated", str(backing)], capture_output=True, text=True).stdout
        for line in listed.splitlines():
            subprocess.run(["losetup", "--detach", line.split(":")[0]], check=False)
