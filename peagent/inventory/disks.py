"""Disks, read from udev's database (pyudev) and sysfs.

Besides what udev knows (model, serial, WWN, links, partitions, signatures), three facts are
derived here because only here are the devices at hand:

* ``transport`` - how the disk is attached (nvme, virtio, sata, sas, scsi, usb, mmc, unknown);
* ``in_use`` - why the kernel is using the disk now (mounted, swap, held by device-mapper, MD);
* ``pe_medium`` - the disk carries the PE itself: its ISO or USB stick, labelled
  :data:`PE_MEDIUM_LABEL`. Target selection never picks it.

Loop, RAM, zram, device-mapper, MD and similar block devices are views of memory, files or
other disks, never deployment targets: they are listed only when asked for, marked ``virtual``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from peagent.disk.capabilities import probe as probe_erase_caps
from peagent.inventory.model import Disk, Partition

PE_MEDIUM_LABEL = "PEAGENT"
_VIRTUAL_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd")


def disks(include_virtual: bool = False) -> list[Disk]:
    import pyudev  # imported here so that plans and tests need no udev

    context = pyudev.Context()
    mounts = _mounted_devices()
    found = []
    for dev in context.list_devices(subsystem="block", DEVTYPE="disk"):
        virtual = dev.sys_name.startswith(_VIRTUAL_PREFIXES)
        if (virtual and not include_virtual) or _int_attr(dev, "size") == 0:
            continue
        found.append(_disk(context, dev, mounts, virtual))
    return sorted(found, key=lambda d: d.name)


def _disk(context: Any, dev: Any, mounts: dict[str, list[str]], virtual: bool) -> Disk:
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
            part_uuid=pp.get("ID_PART_ENTRY_UUID") or None,
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
        virtual=virtual,
        erase_caps=probe_erase_caps(dev.device_node, dev.sys_path),
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
