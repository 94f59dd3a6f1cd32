"""The HD Audio and ACPI/PNP readers against fake sysfs trees shaped like QEMU's and a laptop's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peagent.inventory import collect, from_dict, hardware
from peagent.inventory.model import AcpiDevice, HdaCodec, Inventory


def put(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def device(root: Path, bus: str, name: str, real: str, attrs: dict[str, str]) -> None:
    """A device under /sys/devices, linked from /sys/bus/<bus>/devices as the kernel does."""
    for key, value in attrs.items():
        put(root, f"{real}/{key}", value)
    link = root / f"bus/{bus}/devices/{name}"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(root / real)


QEMU_HDA = {  # -device intel-hda -device hda-duplex, as the kernel's hdac_sysfs.c prints them
    "vendor_id": "0x1af40022", "subsystem_id": "0x1af40021", "revision_id": "0x100101",
    "modalias": "hdaudio:v1AF40022r00100101a01", "afg": "0x1", "mfg": "0x0", "vendor_name": "QEMU",
}


def test_hda_codecs(tmp_path: Path) -> None:
    device(tmp_path, "hdaudio", "hdaudioC0D0", "devices/pci0000:00/0000:00:1b.0/sound/card0/hdaudioC0D0", QEMU_HDA)
    device(tmp_path, "hdaudio", "hdaudioC1D2", "devices/pci0000:00/0000:00:03.0/sound/card1/hdaudioC1D2",
           {"vendor_id": "0x80862882", "subsystem_id": "0x80860101", "revision_id": "0x100000",
            "modalias": "hdaudio:v80862882r00100000a01"})  # an Intel HDMI codec, on the GPU's controller
    assert hardware.hda_codecs(tmp_path) == [
        HdaCodec(address="hdaudioC0D0", vendor_id="1AF40022", subsystem_id="1AF40021", revision_id="00100101",
                 modalias="hdaudio:v1AF40022r00100101a01"),
        HdaCodec(address="hdaudioC1D2", vendor_id="80862882", subsystem_id="80860101", revision_id="00100000",
                 modalias="hdaudio:v80862882r00100000a01"),
    ]


ACPI = "devices/LNXSYSTM:00/LNXSYBUS:00"


def test_acpi_devices_only_real_ids_and_present(tmp_path: Path) -> None:
    device(tmp_path, "acpi", "LNXSYSTM:00", "devices/LNXSYSTM:00", {"hid": "LNXSYSTM", "modalias": "acpi:LNXSYSTM:"})
    device(tmp_path, "acpi", "LNXCPU:00", "devices/LNXSYSTM:00/LNXCPU:00", {"hid": "LNXCPU", "modalias": "acpi:LNXCPU:"})
    device(tmp_path, "acpi", "device:01", f"{ACPI}/PNP0A08:00/device:01", {"path": "\\_SB_.PCI0.S10", "adr": "0x10000"})
    device(tmp_path, "acpi", "PNP0A08:00", f"{ACPI}/PNP0A08:00",
           {"hid": "PNP0A08", "modalias": "acpi:PNP0A08:PNP0A03:", "path": "\\_SB_.PCI0"})
    device(tmp_path, "acpi", "MSFT0101:00", f"{ACPI}/MSFT0101:00",
           {"hid": "MSFT0101", "modalias": "acpi:MSFT0101:", "status": "15", "path": "\\_SB_.TPM_"})
    # Declared by the firmware for memory hot-plug, but _STA says absent: Windows would not see it either.
    device(tmp_path, "acpi", "PNP0C80:00", f"{ACPI}/PNP0C80:00", {"hid": "PNP0C80", "modalias": "acpi:PNP0C80:",
                                                                   "status": "0"})
    device(tmp_path, "acpi", "INT33D5:00", f"{ACPI}/INT33D5:00",  # Intel's HID event filter, _CID PNP0C02
           {"hid": "INT33D5", "modalias": "acpi:INT33D5:PNP0C02:", "status": "11"})
    assert hardware.acpi_devices(tmp_path) == [
        AcpiDevice(path="INT33D5:00", hid="INT33D5", cids=("PNP0C02",), modalias="acpi:INT33D5:PNP0C02:"),
        AcpiDevice(path="MSFT0101:00", hid="MSFT0101", cids=(), modalias="acpi:MSFT0101:"),
        AcpiDevice(path="PNP0A08:00", hid="PNP0A08", cids=("PNP0A03",), modalias="acpi:PNP0A08:PNP0A03:"),
    ]


def test_pnp_devices_behind_acpi_are_not_listed_twice(tmp_path: Path) -> None:
    device(tmp_path, "acpi", "PNP0501:00", f"{ACPI}/PNP0501:00", {"hid": "PNP0501", "modalias": "acpi:PNP0501:"})
    device(tmp_path, "pnp", "00:01", "devices/pnp0/00:01", {"id": "PNP0501"})
    (tmp_path / "devices/pnp0/00:01/firmware_node").symlink_to(tmp_path / ACPI / "PNP0501:00")
    # A PNPBIOS machine: PNP devices of their own, ids written the way the pnp bus writes them (hex lower case).
    device(tmp_path, "pnp", "00:05", "devices/pnp0/00:05", {"id": "PNP0c02\nPNP0c01"})
    device(tmp_path, "pnp", "00:06", "devices/pnp0/00:06", {"id": ""})
    assert hardware.acpi_devices(tmp_path) == [
        AcpiDevice(path="PNP0501:00", hid="PNP0501", modalias="acpi:PNP0501:"),
        AcpiDevice(path="00:05", hid="PNP0C02", cids=("PNP0C01",)),
    ]


def test_firmware_ids() -> None:
    assert [hardware.firmware_id(i) for i in ("PNP0A08", "MSFT0101", "INTC1040", "ACPI0003", "PRP0001")] == [True] * 5
    assert [hardware.firmware_id(i) for i in ("LNXSYSTM", "LNXCPU", "device", "PNP0A0", "pnp0a08", "PNPXA08")] == (
        [False] * 6)


def test_collect_reads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("peagent.inventory.disks.disks", lambda include_virtual: [])  # udev: this machine's disks
    device(tmp_path, "hdaudio", "hdaudioC0D0", "devices/pci0000:00/0000:00:1b.0/sound/card0/hdaudioC0D0", QEMU_HDA)
    device(tmp_path, "acpi", "PNP0A08:00", f"{ACPI}/PNP0A08:00", {"hid": "PNP0A08", "modalias": "acpi:PNP0A08:PNP0A03:"})
    inv = collect(sys_root=tmp_path)
    assert [h.address for h in inv.hda] == ["hdaudioC0D0"] and [a.hid for a in inv.acpi] == ["PNP0A08"]


def test_the_json_form_round_trips_and_old_inventories_still_load() -> None:
    inv = Inventory(hda=(HdaCodec("hdaudioC0D0", "1AF40022", "1AF40021", "00100101", "hdaudio:v1AF40022r00100101a01"),),
                    acpi=(AcpiDevice("PNP0A08:00", "PNP0A08", ("PNP0A03",), "acpi:PNP0A08:PNP0A03:"),))
    doc = json.loads(json.dumps(inv.to_dict()))
    assert doc["acpi"][0]["cids"] == ["PNP0A03"] and doc["hda"][0]["revision_id"] == "00100101"
    assert from_dict(doc) == inv
    old = {"inventory_version": 1, "disks": [], "nics": [], "dmi": {}, "pci": [], "usb": []}
    assert from_dict(old).hda == () and from_dict(old).acpi == ()
