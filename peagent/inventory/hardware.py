"""Network interfaces, DMI identity, and PCI and USB devices, read from sysfs.

Everything here is a plain read of files under a sysfs root, so tests can point it at a fake
tree. PCI and USB devices are recorded with the identifiers driver matching needs: vendor,
device, subsystem, class and revision for PCI (the revision is not in the kernel's modalias),
and per-interface modaliases for USB (drivers bind to interfaces, not devices).
"""

from __future__ import annotations

from pathlib import Path

from peagent.inventory.model import Dmi, Nic, PciDevice, UsbDevice, UsbInterface


def read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except (OSError, UnicodeDecodeError):  # absent, or unreadable like a down link's speed
        return None


def _driver(path: Path) -> str | None:
    link = path / "driver"
    return link.resolve().name if link.exists() else None


def _hex(path: Path, digits: int) -> str:
    """A sysfs hex attribute ('0x8086', '0a') as upper-case digits without 0x."""
    value = (read(path) or "0").lower().removeprefix("0x")
    return value.upper().rjust(digits, "0")[-digits:]


def nics(sys_root: Path) -> list[Nic]:
    found = []
    base = sys_root / "class/net"
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        if not (path / "device").exists():  # lo, bridges, tunnels: not hardware
            continue
        speed = read(path / "speed")
        carrier = read(path / "carrier")
        found.append(Nic(
            name=path.name,
            mac=(read(path / "address") or "").lower(),
            driver=_driver(path / "device"),
            link=None if carrier is None else carrier == "1",
            speed_mbps=int(speed) if speed and speed.isdigit() and int(speed) > 0 else None,
        ))
    return found


def dmi(sys_root: Path) -> Dmi:
    base = sys_root / "class/dmi/id"
    return Dmi(**{name: read(base / name) for name in Dmi.__dataclass_fields__})


def pci_devices(sys_root: Path) -> list[PciDevice]:
    found = []
    base = sys_root / "bus/pci/devices"
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        found.append(PciDevice(
            slot=path.name,
            vendor=_hex(path / "vendor", 4),
            device=_hex(path / "device", 4),
            subsystem_vendor=_hex(path / "subsystem_vendor", 4),
            subsystem_device=_hex(path / "subsystem_device", 4),
            class_code=_hex(path / "class", 6),
            revision=_hex(path / "revision", 2),
            modalias=read(path / "modalias") or "",
            driver=_driver(path),
        ))
    return found


def usb_devices(sys_root: Path) -> list[UsbDevice]:
    found = []
    base = sys_root / "bus/usb/devices"
    paths = sorted(base.iterdir()) if base.is_dir() else []
    for path in paths:
        if ":" in path.name or not (path / "idVendor").exists():  # interfaces are read below
            continue
        interfaces = [
            UsbInterface(
                number=_hex(i / "bInterfaceNumber", 2),
                interface_class=_hex(i / "bInterfaceClass", 2),
                interface_subclass=_hex(i / "bInterfaceSubClass", 2),
                interface_protocol=_hex(i / "bInterfaceProtocol", 2),
                modalias=read(i / "modalias") or "",
                driver=_driver(i),
            )
            for i in paths if i.name.startswith(path.name + ":")
        ]
        found.append(UsbDevice(
            path=path.name,
            vendor=_hex(path / "idVendor", 4),
            product=_hex(path / "idProduct", 4),
            revision=_hex(path / "bcdDevice", 4),
            device_class=_hex(path / "bDeviceClass", 2),
            manufacturer=read(path / "manufacturer"),
            product_name=read(path / "product"),
            interfaces=tuple(interfaces),
        ))
    return found
