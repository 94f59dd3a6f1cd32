"""The sysfs readers against a fake sysfs tree shaped like a real one."""

from __future__ import annotations

from pathlib import Path

from peagent.inventory import hardware
from peagent.inventory.model import UsbInterface


def put(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def link(root: Path, rel: str, target: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    (root / target).mkdir(parents=True, exist_ok=True)
    path.symlink_to(root / target)


def test_pci_ids_as_windows_writes_them(tmp_path: Path) -> None:
    dev = "bus/pci/devices/0000:00:19.0"
    for name, value in {"vendor": "0x8086", "device": "0x15b8", "subsystem_vendor": "0x1028",
                        "subsystem_device": "0x07a1", "class": "0x020000", "revision": "0x10",
                        "modalias": "pci:v00008086d000015B8sv00001028sd000007A1bc02sc00i00"}.items():
        put(tmp_path, f"{dev}/{name}", value)
    link(tmp_path, f"{dev}/driver", "bus/pci/drivers/e1000e")
    (pci,) = hardware.pci_devices(tmp_path)
    assert (pci.vendor, pci.device, pci.subsystem_vendor, pci.subsystem_device) == ("8086", "15B8", "1028", "07A1")
    assert (pci.class_code, pci.revision, pci.driver) == ("020000", "10", "e1000e")


def test_usb_devices_with_their_interfaces(tmp_path: Path) -> None:
    base = "bus/usb/devices"
    for name, value in {"idVendor": "0781", "idProduct": "5567", "bcdDevice": "0126", "bDeviceClass": "00",
                        "manufacturer": "SanDisk", "product": "Cruzer Blade"}.items():
        put(tmp_path, f"{base}/1-2/{name}", value)
    for name, value in {"bInterfaceNumber": "00", "bInterfaceClass": "08", "bInterfaceSubClass": "06",
                        "bInterfaceProtocol": "50",
                        "modalias": "usb:v0781p5567d0126dc00dsc00dp00ic08isc06ip50in00"}.items():
        put(tmp_path, f"{base}/1-2:1.0/{name}", value)
    link(tmp_path, f"{base}/1-2:1.0/driver", "bus/usb/drivers/usb-storage")
    put(tmp_path, f"{base}/usb1/idVendor", "1d6b")  # a root hub: a device too
    devices = {d.path: d for d in hardware.usb_devices(tmp_path)}
    stick = devices["1-2"]
    assert (stick.vendor, stick.product, stick.revision, stick.product_name) == ("0781", "5567", "0126", "Cruzer Blade")
    assert stick.interfaces == (UsbInterface(number="00", interface_class="08", interface_subclass="06",
                                             interface_protocol="50",
                                             modalias="usb:v0781p5567d0126dc00dsc00dp00ic08isc06ip50in00",
                                             driver="usb-storage"),)
    assert devices["usb1"].vendor == "1D6B" and devices["usb1"].interfaces == ()


def test_nics_only_hardware_and_unreadable_speed(tmp_path: Path) -> None:
    put(tmp_path, "class/net/lo/address", "00:00:00:00:00:00")
    put(tmp_path, "class/net/eno1/address", "52:54:00:AB:CD:EF")
    put(tmp_path, "class/net/eno1/carrier", "1")
    put(tmp_path, "class/net/eno1/speed", "-1")
    link(tmp_path, "class/net/eno1/device", "devices/pci0000:00/0000:00:19.0")
    link(tmp_path, "devices/pci0000:00/0000:00:19.0/driver", "bus/pci/drivers/e1000e")
    (nic,) = hardware.nics(tmp_path)
    assert (nic.name, nic.mac, nic.driver, nic.link, nic.speed_mbps) == ("eno1", "52:54:00:ab:cd:ef", "e1000e", True, None)


def test_dmi(tmp_path: Path) -> None:
    put(tmp_path, "class/dmi/id/sys_vendor", "LENOVO")
    put(tmp_path, "class/dmi/id/product_version", "ThinkPad T14 Gen 3")
    dmi = hardware.dmi(tmp_path)
    assert dmi.sys_vendor == "LENOVO" and dmi.product_version == "ThinkPad T14 Gen 3"
    assert dmi.product_serial is None


def test_an_empty_sysfs_gives_an_empty_inventory(tmp_path: Path) -> None:
    assert hardware.nics(tmp_path) == hardware.pci_devices(tmp_path) == hardware.usb_devices(tmp_path) == []
