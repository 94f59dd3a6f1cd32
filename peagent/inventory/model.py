"""The inventory's data: plain, immutable values that every decision works on.

The JSON form (``Inventory.to_dict``, read back by :func:`from_dict`) is stable and documented
in docs/inventory.md: fixtures, the DP and other tools rely on it. Fields are only ever added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from peagent.disk.capabilities import EraseCaps

INVENTORY_VERSION = 1


@dataclass(frozen=True)
class Partition:
    number: int
    path: str
    start: int  # bytes
    size: int  # bytes
    fstype: str | None = None
    label: str | None = None
    uuid: str | None = None
    type_guid: str | None = None
    name: str | None = None
    part_uuid: str | None = None  # the GPT partition GUID (or MBR disk id + number)


@dataclass(frozen=True)
class Disk:
    name: str
    path: str
    size: int
    logical_sector_size: int = 512
    physical_sector_size: int = 512
    model: str | None = None
    vendor: str | None = None
    serial: str | None = None
    wwn: str | None = None
    wwn_with_extension: str | None = None
    wwn_vendor_extension: str | None = None
    hctl: str | None = None
    by_id: tuple[str, ...] = ()
    by_path: str | None = None
    transport: str = "unknown"
    rotational: bool = False
    removable: bool = False
    read_only: bool = False
    partition_table: str | None = None
    fstype: str | None = None
    label: str | None = None
    partitions: tuple[Partition, ...] = ()
    in_use: tuple[str, ...] = ()
    pe_medium: bool = False
    virtual: bool = False  # loop, device-mapper, MD, ...: listed only when asked for
    erase_caps: EraseCaps | None = None  # what erase modes the disk supports (peagent.disk.capabilities)

    def hint_value(self, key: str) -> str | int | bool | None:
        """The value a root-device hint of this key compares against (see peagent.hints)."""
        if key == "name":
            return self.path
        value = getattr(self, key, None)
        return value if isinstance(value, str | int | bool) else None

    def data_found(self) -> list[str]:
        """What on this disk suggests it holds data; empty when it looks blank."""
        found = []
        if self.partition_table:
            found.append(f"a {self.partition_table} partition table")
        if self.fstype:
            found.append(f"a {self.fstype} signature")
        for p in self.partitions:
            if p.fstype:
                found.append(f"{p.fstype} on partition {p.number}")
        return found

    def summary(self) -> str:
        ident = " ".join(x for x in (self.vendor, self.model) if x) or "unknown model"
        size = f"{self.size / 1e9:.1f} GB"
        return f"{self.path} ({size} {self.transport}, {ident}, serial {self.serial or '-'})"


@dataclass(frozen=True)
class Nic:
    name: str
    mac: str
    driver: str | None = None
    link: bool | None = None
    speed_mbps: int | None = None


@dataclass(frozen=True)
class Dmi:
    sys_vendor: str | None = None
    product_name: str | None = None
    product_version: str | None = None
    product_serial: str | None = None
    product_uuid: str | None = None
    board_vendor: str | None = None
    board_name: str | None = None
    chassis_asset_tag: str | None = None


@dataclass(frozen=True)
class PciDevice:
    slot: str  # 0000:00:1f.2
    vendor: str  # 4 hex digits, upper case, as Windows hardware ids write them
    device: str
    subsystem_vendor: str
    subsystem_device: str
    class_code: str  # 6 hex digits: base class, subclass, programming interface
    revision: str  # 2 hex digits (not part of the modalias)
    modalias: str
    driver: str | None = None


@dataclass(frozen=True)
class UsbInterface:
    number: str  # 2 hex digits
    interface_class: str
    interface_subclass: str
    interface_protocol: str
    modalias: str
    driver: str | None = None


@dataclass(frozen=True)
class UsbDevice:
    path: str  # sysfs name, e.g. 1-2.1
    vendor: str  # idVendor, 4 hex digits upper case
    product: str  # idProduct
    revision: str  # bcdDevice
    device_class: str
    manufacturer: str | None = None
    product_name: str | None = None
    interfaces: tuple[UsbInterface, ...] = ()


@dataclass(frozen=True)
class HdaCodec:
    """An HD Audio codec on a controller's link: the device Windows' HDAUDIO\\ ids and Linux's hdaudio: aliases name."""

    address: str  # sysfs name, e.g. hdaudioC0D0: card 0, codec address 0 on its link
    vendor_id: str  # 8 hex digits, upper case: codec vendor (high 16 bits) and device (low 16 bits)
    subsystem_id: str  # 8 hex digits: board maker (high 16 bits) and board SKU/assembly
    revision_id: str  # 8 hex digits: spec major/minor, vendor revision, stepping
    modalias: str


@dataclass(frozen=True)
class AcpiDevice:
    """A firmware-described device (ACPI namespace, or PNP on old machines): matched by its _HID and _CIDs."""

    path: str  # sysfs name, e.g. PNP0A08:00 (ACPI bus) or 00:05 (PNP bus, when no ACPI node stands behind it)
    hid: str  # PNP id (PNP0A08: 3 letters, 4 hex digits) or ACPI id (MSFT0101: 4 characters, 4 hex digits)
    cids: tuple[str, ...] = ()  # compatible ids, most specific first
    modalias: str = ""  # acpi:PNP0A08:PNP0A03: (empty for PNP-bus-only devices: the kernel gives them none)


@dataclass(frozen=True)
class Inventory:
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    dmi: Dmi = field(default_factory=Dmi)
    pci: tuple[PciDevice, ...] = ()
    usb: tuple[UsbDevice, ...] = ()
    hda: tuple[HdaCodec, ...] = ()
    acpi: tuple[AcpiDevice, ...] = ()

    def macs(self) -> list[str]:
        return [n.mac for n in self.nics]

    def to_dict(self) -> dict[str, Any]:
        return {"inventory_version": INVENTORY_VERSION, **asdict(self)}


def from_dict(doc: dict[str, Any]) -> Inventory:
    """Rebuild an Inventory from :meth:`Inventory.to_dict` output (fixtures, the DP's copy)."""
    disks = []
    for d in doc.get("disks", []):
        d = dict(d)
        d["partitions"] = tuple(Partition(**p) for p in d.get("partitions", []))
        d["by_id"] = tuple(d.get("by_id", ()))
        d["in_use"] = tuple(d.get("in_use", ()))
        d["erase_caps"] = EraseCaps.from_dict(d["erase_caps"]) if d.get("erase_caps") else None
        disks.append(Disk(**d))
    usb = []
    for u in doc.get("usb", []):
        u = dict(u)
        u["interfaces"] = tuple(UsbInterface(**i) for i in u.get("interfaces", []))
        usb.append(UsbDevice(**u))
    return Inventory(
        disks=tuple(disks),
        nics=tuple(Nic(**n) for n in doc.get("nics", [])),
        dmi=Dmi(**doc.get("dmi", {})),
        pci=tuple(PciDevice(**p) for p in doc.get("pci", [])),
        usb=tuple(usb),
        hda=tuple(HdaCodec(**h) for h in doc.get("hda", [])),
        acpi=tuple(AcpiDevice(**{**a, "cids": tuple(a.get("cids", ()))}) for a in doc.get("acpi", [])),
    )
