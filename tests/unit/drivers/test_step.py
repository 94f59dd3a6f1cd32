"""The deploy's drivers step against a DP: trust of the index, the required rule, every fetched byte checked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from peagent.drivers.step import fetch_package, inject, load, windows_label
from peagent.drivers.store import index_store, write_index
from peagent.errors import SignatureError, StateError, VerifyError
from peagent.inventory import Inventory, PciDevice
from peagent.task import DriversSpec
from tests.support.dp import embedded_dp
from tests.support.kmod import make_module

RELEASE = "6.1.0-56-amd64"
E1000 = PciDevice(slot="0000:00:02.0", vendor="8086", device="100E", subsystem_vendor="1AF4", subsystem_device="1100",
                  class_code="020000", revision="03", modalias="pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00")
I219 = PciDevice(slot="0000:00:1f.6", vendor="8086", device="15B8", subsystem_vendor="1028", subsystem_device="07A1",
                 class_code="020000", revision="10", modalias="pci:v00008086d000015B8sv00001028sd000007A1bc02sc00i00")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "dp" / "drivers"
    package = root / "linux/_generic/_generic/intel-e1000"
    package.mkdir(parents=True)
    modinfo = f"alias=pci:v00008086d0000100Esv*sd*bc*sc*i*\0name=e1000\0vermagic={RELEASE} SMP mod_unload\0"
    (package / "e1000.ko").write_bytes(make_module(modinfo.encode()))
    write_index(index_store(root), root, None)
    return root


def pin(store: Path) -> str:
    return hashlib.sha256((store / "index.json").read_bytes()).hexdigest()


def test_an_unsigned_index_needs_the_tasks_pin(store: Path) -> None:
    with embedded_dp(store.parent) as dp:
        with pytest.raises(SignatureError, match="not signed"):
            load(DriversSpec("drivers/index.json"), (dp.url,), [])
        loaded = load(DriversSpec("drivers/index.json", index_sha256=pin(store)), (dp.url,), [])
    assert [p.id for p in loaded.index.packages] == ["linux/_generic/_generic/intel-e1000"]
    assert loaded.bases == (f"{dp.url}drivers/",)


def test_required_refuses_a_device_without_a_driver_before_fetching(store: Path, tmp_path: Path) -> None:
    root = tmp_path / "newos"
    (root / "lib/modules" / RELEASE / "kernel").mkdir(parents=True)
    spec = DriversSpec("drivers/index.json", index_sha256=pin(store), required=True)
    events: list[tuple[str, str]] = []
    with embedded_dp(store.parent) as dp:
        loaded = load(spec, (dp.url,), [])
        with pytest.raises(StateError, match=r"drivers\.required: no driver for 1 device\(s\): PCI 0000:00:1f\.6"):
            inject(root, "linux", loaded, Inventory(pci=(E1000, I219)), spec, tmp_path / "work",
                   lambda phase, message: events.append((phase, message)))
    assert not (tmp_path / "work").exists()  # nothing fetched
    assert any("intel-e1000 (module e1000" in m for _, m in events)


def test_a_package_file_that_is_not_what_the_index_says_is_refused(store: Path, tmp_path: Path) -> None:
    with embedded_dp(store.parent) as dp:
        loaded = load(DriversSpec("drivers/index.json", index_sha256=pin(store)), (dp.url,), [])
        (store / "linux/_generic/_generic/intel-e1000/e1000.ko").write_bytes(b"\x7fELF swapped after indexing")
        with pytest.raises(VerifyError, match=r"e1000\.ko has sha256 .*the signed index says"):
            fetch_package(loaded.index.packages[0], loaded.bases, tmp_path / "work")


@pytest.mark.parametrize(("version", "label"), [((10, 0, 22631), "win11"), ((10, 0, 19045), "win10"),
                                                ((6, 3, 9600), "win81"), ((6, 1, 7601), "win7")])
def test_the_store_folder_for_a_windows_version(version: tuple[int, int, int], label: str) -> None:
    assert windows_label(*version) == label
