"""peagent.inplace.reimage's refusals that come before any mount (the rest runs in tests/integration)."""

from __future__ import annotations

import pytest

from peagent.errors import InplaceError
from peagent.inplace.detect import FoundOS, Surveyed
from peagent.inplace.reimage import reimage
from peagent.inplace.spec import InplaceSpec
from peagent.inventory import Partition


def test_a_windows_partition_is_not_given_a_linux_file_image() -> None:
    windows = Surveyed(Partition(number=3, path="/dev/nonexistent3", start=0, size=1 << 30, fstype="ntfs"),
                       FoundOS("windows", "Windows", "Windows/System32/config/SYSTEM"))
    with pytest.raises(InplaceError, match=r"partition 3 holds Windows \(Windows/System32/config/SYSTEM\): Windows "
                       r"is re-imaged in place from a WIM \(image\.wim.*nothing was changed"):
        reimage(windows, InplaceSpec(), [], "d1")
