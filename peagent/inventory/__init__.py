"""The machine as the agent sees it: disks, network interfaces, DMI identity, PCI, USB, HDA and ACPI devices.

:func:`collect` reads udev's database and sysfs once and returns a plain, immutable
:class:`Inventory`. Everything downstream (target selection, plans, driver matching, the DP's
records) works on that value, never on devices, so decisions can be tested from inventories
captured on real machines: ``peagent inventory --json`` writes one, :func:`from_dict` reads it
back, and docs/inventory.md documents its fields.

``model`` holds the data, ``disks`` reads block devices (pyudev), ``hardware`` the rest (sysfs).
"""

from __future__ import annotations

from pathlib import Path

from peagent.inventory import disks as _disks
from peagent.inventory import hardware
from peagent.inventory.disks import PE_MEDIUM_LABEL
from peagent.inventory.model import (
    INVENTORY_VERSION,
    AcpiDevice,
    Disk,
    Dmi,
    HdaCodec,
    Inventory,
    Nic,
    Partition,
    PciDevice,
    UsbDevice,
    UsbInterface,
    from_dict,
)

__all__ = [
    "INVENTORY_VERSION", "PE_MEDIUM_LABEL", "AcpiDevice", "Disk", "Dmi", "HdaCodec", "Inventory", "Nic",
    "Partition", "PciDevice", "UsbDevice", "UsbInterface", "collect", "from_dict",
]


def collect(include_virtual: bool = False, sys_root: Path = Path("/sys")) -> Inventory:
    """Inventory this machine; ``include_virtual`` adds loop, device-mapper, MD, ... devices."""
    return Inventory(
        disks=tuple(_disks.disks(include_virtual)),
        nics=tuple(hardware.nics(sys_root)),
        dmi=hardware.dmi(sys_root),
        pci=tuple(hardware.pci_devices(sys_root)),
        usb=tuple(hardware.usb_devices(sys_root)),
        hda=tuple(hardware.hda_codecs(sys_root)),
        acpi=tuple(hardware.acpi_devices(sys_root)),
    )
