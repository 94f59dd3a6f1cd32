"""The matcher on a real index of a store: make/model groups first, Windows' ranking, Linux modaliases,
architectures never crossed, and every choice explained."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from peagent.drivers.hwids import Device, devices
from peagent.drivers.inf import parse_inf
from peagent.drivers.match import Target, match
from peagent.drivers.store import Package, StoreIndex, index_store
from peagent.inventory import Dmi, Inventory, PciDevice
from tests.support.kmod import make_module

FIXTURES = Path(__file__).parent / "fixtures"
RELEASE = "6.1.0-56-amd64"
I219 = PciDevice(slot="0000:00:1f.6", vendor="8086", device="15B8", subsystem_vendor="1028", subsystem_device="07A1",
                 class_code="020000", revision="10",
                 modalias="pci:v00008086d000015B8sv00001028sd000007A1bc02sc00i00")
E1000 = PciDevice(slot="0000:00:02.0", vendor="8086", device="100E", subsystem_vendor="1AF4", subsystem_device="1100",
                  class_code="020000", revision="03",
                  modalias="pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00")
DELL = Dmi(sys_vendor="Dell Inc.", product_name="Latitude 5440")
OLDER_INF = (FIXTURES / "e1d68x64.inf").read_bytes().decode("utf-16").replace("06/21/2023", "01/10/2021")


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def modinfo(name: str, *aliases: str, release: str = RELEASE) -> bytes:
    records = [f"alias={a}" for a in aliases] + [f"name={name}", f"vermagic={release} SMP preempt mod_unload"]
    return make_module("\0".join(records).encode() + b"\0")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    write(root / "windows/_generic/_generic/_generic/amd64/intel-lan-new/e1d68x64.inf",
          (FIXTURES / "e1d68x64.inf").read_bytes())
    write(root / "windows/Dell Inc./Latitude 5440/win10/amd64/dell-lan-old/e1d68x64.inf", OLDER_INF.encode("utf-16"))
    write(root / "windows/_generic/_generic/_generic/x86/intel-lan-x86/e1d68x64.inf",
          (FIXTURES / "e1d68x64.inf").read_bytes())
    write(root / "linux/_generic/_generic/intel-e1000/e1000.ko", modinfo("e1000", "pci:v00008086d0000100Esv*sd*bc*sc*i*"))
    write(root / "linux/_generic/_generic/old-e1000/e1000.ko",
          modinfo("e1000", "pci:v00008086d0000100Esv*sd*bc*sc*i*", release="5.10.0-20-amd64"))
    return root


def test_the_machines_own_group_wins_over_a_newer_generic_driver(store: Path) -> None:
    index = index_store(store)
    dell = Target("windows", "amd64", "DELL INC.", "latitude 5440", (10, 0, 19045), "win10")
    result = match(devices(Inventory(pci=(I219,), dmi=DELL)), index, dell)
    [choice] = result.choices
    assert choice.package.id == "windows/Dell Inc./Latitude 5440/win10/amd64/dell-lan-old"
    # The INF lists the id with SUBSYS, the device's second hardware id (the first has REV): position 1.
    assert choice.matched == "PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028 = PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028, rank 0x00FF0001"
    assert "not considered: 1 package(s) of a less specific group" in choice.reasons[-1]
    # Another model: only generic packages apply, and the newest wins among equals; x86 never.
    other = Target("windows", "amd64", "Dell Inc.", "Precision 3680", (10, 0, 19045), "win10")
    [generic] = match(devices(Inventory(pci=(I219,), dmi=DELL)), index, other).choices
    assert generic.package.id == "windows/_generic/_generic/_generic/amd64/intel-lan-new"
    assert "[E15B8.10.0.1]" in generic.what and generic.reasons[0].startswith("chosen:")


def test_an_older_windows_takes_the_section_decorated_for_it(store: Path) -> None:
    index = index_store(store)
    win7 = Target("windows", "amd64", None, None, (6, 1, 7601), "win7")
    [choice] = match(devices(Inventory(pci=(I219,))), index, win7).choices
    assert choice.install_section == "E15B8.6.1.1"


def test_linux_matches_modaliases_and_skips_modules_for_another_kernel(store: Path) -> None:
    index = index_store(store)
    result = match(devices(Inventory(pci=(E1000, I219))), index, Target("linux", "x86_64", releases=(RELEASE,)))
    [choice] = result.choices
    assert choice.package.id == "linux/_generic/_generic/intel-e1000" and choice.module is not None
    assert "lost: linux/_generic/_generic/old-e1000 module e1000: built for 5.10.0-20-amd64" in choice.reasons[1]
    assert choice.matched == "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00 ~ pci:v00008086d0000100Esv*sd*bc*sc*i*"
    assert [d.description for d in result.unmatched] == [devices(Inventory(pci=(I219,)))[0].description]
    lines = result.lines()
    assert any(line.endswith("no driver in the store (the OS's own, if any)") for line in lines)


def test_matching_a_big_store_is_fast() -> None:
    """2,000 packages with 20 ids each against 40 devices: the id dictionary keeps it well under a second."""
    inf = parse_inf((FIXTURES / "e1d68x64.inf").read_bytes(), "x.inf")
    packages = tuple(Package(f"windows/_generic/_generic/_generic/amd64/p{i}", "windows", None, None, None, "amd64",
                             (), (inf,)) for i in range(2000))
    index = StoreIndex(packages)
    many = [Device("pci", f"dev {i}", (f"PCI\\VEN_8086&DEV_{i:04X}",), (), ()) for i in range(39)]
    many.append(devices(Inventory(pci=(I219,)))[0])
    started = time.monotonic()
    result = match(many, index, Target("windows", "amd64", None, None, (10, 0, 19045), "win10"))
    elapsed = time.monotonic() - started
    assert len(result.choices) == 1 and len(result.unmatched) == 39
    assert elapsed < 5  # generous for a loaded CI machine; bench figure in the closing note
    json.dumps(result.lines())


def test_the_cli_explains_every_choice_and_lists_what_has_no_driver(store: Path, tmp_path: Path, capsys) -> None:
    from peagent.cli import main
    from peagent.drivers.store import write_index

    write_index(index_store(store), tmp_path, None)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(Inventory(pci=(I219, E1000), dmi=DELL).to_dict()))
    assert main(["drivers", "match", "--inventory", str(inventory), "--index", str(tmp_path / "index.json"),
                 "--os", "windows", "--windows-version", "10.0.19045", "--windows-label", "win10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("PCI 0000:00:1f.6 8086:15B8 (Ethernet controller class 0200): windows/Dell Inc./Latitude "
                             "5440/win10/amd64/dell-lan-old (e1d68x64.inf [E15B8.10.0.1], group Dell Inc./Latitude 5440)")
    assert out[1].startswith("  chosen:")
    # The e1000 has no id of its own in these INFs; the Intel INF's class fallback takes it, as a compatible id.
    e1000 = next(line for line in out if line.startswith("PCI 0000:00:02.0 8086:100E"))
    assert e1000.endswith("matched PCI\\VEN_8086&CC_0200 = PCI\\VEN_8086&CC_0200, rank 0x00FF3003")
    assert out[-1].startswith("2 device(s) matched, 0 without a driver, 5 packages, in ")
    assert main(["drivers", "match", "--inventory", str(inventory), "--index", str(tmp_path / "index.json"),
                 "--os", "windows", "--windows-version", "10"]) == 2  # a version without its build: refused
