"""The machine as the agent sees it: disks, network interfaces and DMI identity.

:func:`collect` reads udev's database (through pyudev) and sysfs once and returns a plain,
immutable :class:`Inventory`. Everything downstream (target selection, plans, the DP's
records) works on that value, never on devices, so decisions can be tested from inventories
captured on real machines (``peagent inventory --json`` writes one, :func:`from_dict` reads it).

A few facts are derived here because only here are the devices at hand:

* ``transport`` - how the disk is attached (nvme, virtio, sata, sas, scsi, usb, mmc, unknown);
* ``in_use`` - why the kernel is using the disk now (mounted, swap, held by device-mapper, MD);
* ``pe_medium`` - the disk carries the PE itself: its ISO or USB stick, labelled
  :data:`PE_MEDIUM_LABEL`. Target selection never picks it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

INVENTORY_VERSION = 1
PE_MEDIUM_LABEL = "PEAGENT"

# Block devices that are never deployment targets: they are not disks but views of memory,
# files or other disks.
_VIRTUAL_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd")


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
class Inventory:
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    dmi: Dmi = field(default_factory=Dmi)

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
        disks.append(Disk(**d))
    return Inventory(
        disks=tuple(disks),
        nics=tuple(Nic(**n) for n in doc.get("nics", [])),
        dmi=Dmi(**doc.get("dmi", {})),
    )


# --- collection: the only part that touches the system --------------------------------------


def collect(sys_root: Path = Path("/sys")) -> Inventory:
    import pyudev  # imported here so that plans and tests need no udev

    context = pyudev.Context()
    mounts = _mounted_devices()
    disks = []
    for dev in context.list_devices(subsystem="block", DEVTYPE="disk"):
        if dev.sys_name.startswith(_VIRTUAL_PREFIXES) or _int_attr(dev, "size") == 0:
            continue
        disks.append(_disk(context, dev, mounts))
    disks.sort(key=lambda d: d.name)
    return Inventory(disks=tuple(disks), nics=tuple(_nics(sys_root)), dmi=_dmi(sys_root))


def _disk(context: Any, dev: Any, mounts: dict[str, list[str]]) -> Disk:
    props = dev.properties
    partitions = []
    in_use = _in_use(dev, dev.device_node, mounts)
    for part in context.list_devices(subsystem="block", DEVTYPE="partition", parent=dev):
        pp = part.properties
        partitions.append(Partition(
            number=_int_attr(part, "partition"),
            path=part.device_node,
            start=_int_attr(part, "start") * 512,
            size=_int_attr(part, "size") * 512,
            fstype=pp.get("ID_FS_TYPE") or None,
            label=pp.get("ID_FS_LABEL") or None,
            uuid=pp.get("ID_FS_UUID") or None,
            type_guid=pp.get("ID_PART_ENTRY_TYPE") or None,
            name=pp.get("ID_PART_ENTRY_NAME") or None,
        ))
        in_use += _in_use(part, part.device_node, mounts)
    partitions.sort(key=lambda p: p.number)
    links = [str(x) for x in dev.device_links]
    scsi = dev.find_parent("scsi", "scsi_device")
    labels = [props.get("ID_FS_LABEL")] + [p.label for p in partitions]
    return Disk(
        name=dev.sys_name,
        path=dev.device_node,
        size=_int_attr(dev, "size") * 512,
        logical_sector_size=_int_attr(dev, "queue/logical_block_size") or 512,
        physical_sector_size=_int_attr(dev, "queue/physical_block_size") or 512,
        # sysfs model/vendor strings exist for SCSI-like disks; elsewhere "vendor" is a PCI id.
        model=_clean(props.get("ID_MODEL")) or (_str_attr(dev, "device/model") if scsi else None),
        vendor=_clean(props.get("ID_VENDOR")) or (_str_attr(dev, "device/vendor") if scsi else None),
        serial=props.get("ID_SERIAL_SHORT") or props.get("ID_SERIAL") or _str_attr(dev, "serial"),
        wwn=props.get("ID_WWN") or _str_attr(dev, "wwid"),
        wwn_with_extension=props.get("ID_WWN_WITH_EXTENSION"),
        wwn_vendor_extension=props.get("ID_WWN_VENDOR_EXTENSION"),
        hctl=scsi.sys_name if scsi is not None else None,
        by_id=tuple(sorted(x for x in links if x.startswith("/dev/disk/by-id/"))),
        by_path=next((x for x in sorted(links) if x.startswith("/dev/disk/by-path/")), None),
        transport=_transport(dev),
        rotational=_int_attr(dev, "queue/rotational") == 1,
        removable=_int_attr(dev, "removable") == 1,
        read_only=_int_attr(dev, "ro") == 1,
        partition_table=props.get("ID_PART_TABLE_TYPE") or None,
        fstype=props.get("ID_FS_TYPE") or None,
        label=props.get("ID_FS_LABEL") or None,
        partitions=tuple(partitions),
        in_use=tuple(in_use),
        pe_medium=any(lb and lb.upper() == PE_MEDIUM_LABEL for lb in labels),
    )


def _transport(dev: Any) -> str:
    name = dev.sys_name
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith("mmcblk"):
        return "mmc"
    bus = dev.properties.get("ID_BUS")
    if bus == "usb" or dev.find_parent("usb") is not None:
        return "usb"
    if dev.find_parent("virtio") is not None:
        return "virtio"
    if "-sas-" in dev.properties.get("ID_PATH", ""):
        return "sas"
    if bus == "ata":
        return "sata"
    if bus == "scsi":
        return "scsi"
    return "unknown"


def _in_use(dev: Any, node: str, mounts: dict[str, list[str]]) -> list[str]:
    reasons = []
    if node in mounts:
        reasons.append(f"{node} is mounted on {', '.join(mounts[node][:3])}")
    holders = Path(dev.sys_path, "holders")
    if holders.is_dir():
        reasons += [f"{node} is held by {h.name}" for h in sorted(holders.iterdir())]
    return reasons


def _mounted_devices() -> dict[str, list[str]]:
    """Device node -> its mount points (or 'swap'), from the kernel's own tables."""
    found: dict[str, list[str]] = {}
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            source, target = line.split()[:2]
            if source.startswith("/dev/"):
                found.setdefault(os.path.realpath(source), []).append(target.replace("\\040", " "))
        for line in Path("/proc/swaps").read_text().splitlines()[1:]:
            found.setdefault(os.path.realpath(line.split()[0]), []).append("swap")
    except OSError:
        pass
    return found


def _nics(sys_root: Path) -> list[Nic]:
    nics = []
    base = sys_root / "class/net"
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        if not (path / "device").exists():  # lo, bridges, tunnels: not hardware
            continue
        driver = path / "device/driver"
        speed = _read(path / "speed")
        carrier = _read(path / "carrier")
        nics.append(Nic(
            name=path.name,
            mac=(_read(path / "address") or "").lower(),
            driver=driver.resolve().name if driver.exists() else None,
            link=None if carrier is None else carrier == "1",
            speed_mbps=int(speed) if speed and speed.lstrip("-").isdigit() and int(speed) > 0 else None,
        ))
    return nics


def _dmi(sys_root: Path) -> Dmi:
    base = sys_root / "class/dmi/id"
    return Dmi(**{name: _read(base / name) for name in Dmi.__dataclass_fields__})


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:  # absent, or unreadable like a down link's speed
        return None


def _str_attr(dev: Any, name: str) -> str | None:
    value = dev.attributes.get(name)
    return _clean(value.decode(errors="replace")) if value else None


def _int_attr(dev: Any, name: str) -> int:
    value = dev.attributes.get(name)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _clean(value: str | None) -> str | None:
    # udev encodes spaces as '_' in ID_MODEL; sysfs pads with spaces.
    return value.replace("_", " ").strip() or None if value else None
