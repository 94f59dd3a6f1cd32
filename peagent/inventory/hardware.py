"""Network interfaces, DMI identity, and PCI, USB, HD Audio and ACPI/PNP devices, read from sysfs.

Everything here is a plain read of files under a sysfs root, so tests can point it at a fake
tree. PCI and USB devices are recorded with the identifiers driver matching needs: vendor,
device, subsystem, class and revision for PCI (the revision is not in the kernel's modalias),
and per-interface modaliases for USB (drivers bind to interfaces, not devices).

HD Audio codecs sit behind the PCI audio controller, on its own link: Windows installs the
vendor's audio driver on the codec, not the controller, so the codec's vendor, subsystem and
revision ids are recorded. ACPI devices are what firmware describes rather than a bus
enumerates (the PCI host bridge, a TPM, a vendor's hotkey device): they are matched by their
_HID and _CIDs. Linux invents ids of its own for some namespace objects (LNXSYSTM, LNXCPU,
"device"): those name no driver on either OS and are left out, as are devices whose _STA
says they are absent (firmware declares every hot-plug slot; Windows enumerates only those present).
"""

from __future__ import annotations

import re
from pathlib import Path

from peagent.inventory.model import AcpiDevice, Dmi, HdaCodec, Nic, PciDevice, UsbDevice, UsbInterface

# A PNP id is 3 letters and 4 hex digits (PNP0A08), an ACPI id 4 letters or digits and 4 hex digits
# (MSFT0101, INTC1040): anything else in sysfs is Linux's own invention.
_FIRMWARE_ID = re.compile(r"[A-Z]{3}[0-9A-F]{4}|[A-Z0-9]{4}[0-9A-F]{4}")


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


def hda_codecs(sys_root: Path) -> list[HdaCodec]:
    found = []
    base = sys_root / "bus/hdaudio/devices"
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        if not (path / "vendor_id").exists():
            continue
        found.append(HdaCodec(
            address=path.name,
            vendor_id=_hex(path / "vendor_id", 8),
            subsystem_id=_hex(path / "subsystem_id", 8),
            revision_id=_hex(path / "revision_id", 8),
            modalias=read(path / "modalias") or "",
        ))
    return found


def firmware_id(value: str) -> bool:
    """Whether ``value`` is a real PNP or ACPI id, not one Linux made up (LNXSYSTM, device)."""
    return _FIRMWARE_ID.fullmatch(value) is not None


def _present(path: Path) -> bool:
    status = read(path / "status")  # _STA; no attribute means no _STA, which means present
    if status is None or not status.isdigit():
        return True
    return int(status) & 0x9 != 0  # bit 0 present, bit 3 functioning (a present-but-disabled device)


def acpi_devices(sys_root: Path) -> list[AcpiDevice]:
    """ACPI devices with a real _HID, then PNP-bus devices that no ACPI node stands behind."""
    found = []
    base = sys_root / "bus/acpi/devices"
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        hid = read(path / "hid")
        if hid is None or not firmware_id(hid) or not _present(path):
            continue
        modalias = read(path / "modalias") or ""
        # acpi:HID:CID1:CID2: is the one place sysfs lists the _CIDs (hid has only the _HID)
        ids = modalias.removeprefix("acpi:").split(":") if modalias.startswith("acpi:") else []
        cids = tuple(dict.fromkeys(i for i in ids if firmware_id(i) and i != hid))
        found.append(AcpiDevice(path=path.name, hid=hid, cids=cids, modalias=modalias))
    # With ACPI every PNP device is a second view of an ACPI node (its firmware_node), read
    # above: only PNPBIOS machines have PNP devices of their own.
    base = sys_root / "bus/pnp/devices"
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        if (path / "firmware_node").exists():
            continue
        # one id a line, _HID first; the pnp bus writes hex digits in lower case (PNP0c02)
        ids = [i.upper() for i in (read(path / "id") or "").split() if firmware_id(i.upper())]
        if ids:
            found.append(AcpiDevice(path=path.name, hid=ids[0], cids=tuple(ids[1:])))
    return found
