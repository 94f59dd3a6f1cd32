"""A device's identity in the two forms drivers are matched by: Windows' ids and Linux's modaliases.

A driver never names one machine's device; it names a *family*, as precisely as its author
cared to. So a device carries a list of identifiers, from the one that names exactly this
device (vendor, device, the board maker's subsystem, the silicon revision) down to ones that
only name its class ("any NVMe controller"). Windows calls the specific part of that list the
**hardware ids** and the generic tail the **compatible ids**; when it ranks drivers, a match on
an earlier id in the list beats a match on a later one, and any hardware-id match beats any
compatible-id match (see the ranking module). The order of these lists is therefore part of
their meaning, and every function here returns them most specific first.

Linux instead gives each device one **modalias** string (``pci:v00008086d000015B8sv...``) and
each module a set of glob patterns over it (``modules.alias``); a module fits when a pattern
matches, as kmod does with ``fnmatch``. Matching needs no order, only the strings.

The Windows forms, per bus (WDK "Identifiers for PCI devices", "Standard USB identifiers",
"Identifiers for HDAUDIO devices", ACPI device identification):

PCI
    hardware: ``VEN&DEV&SUBSYS&REV``, ``VEN&DEV&SUBSYS``, ``VEN&DEV&REV``, ``VEN&DEV``,
    ``VEN&DEV&CC_ccsspp``, ``VEN&DEV&CC_ccss``; compatible: ``VEN&DEV&REV``, ``VEN&DEV``,
    ``VEN&CC_ccsspp``, ``VEN&CC_ccss``, ``VEN``, ``CC_ccsspp``, ``CC_ccss``. SUBSYS is the
    subsystem *device* id then the subsystem *vendor* id (``SUBSYS_07A11028`` for Dell's 07A1),
    the reverse of how lspci prints them. The revision is not in the Linux modalias: it comes
    from the inventory. This is the documented list; Windows 10 is seen to drop ``VEN&DEV&REV``
    and ``VEN&DEV`` from the hardware ids of a device with a subsystem (UNVERIFIED: it only
    changes which of two equally specific positions a match scores).
USB
    a device with one function: hardware ``USB\\VID_v&PID_p&REV_rrrr``, ``USB\\VID_v&PID_p``;
    compatible ``USB\\Class_cc&SubClass_ss&Prot_pp``, ``USB\\Class_cc&SubClass_ss``,
    ``USB\\Class_cc``, from the device descriptor, or from the interface when the device's class
    is 00 ("defined per interface"). A *composite* device (several interfaces, device class 00
    or EF) is a parent with the same hardware ids and the compatible ids ``USB\\DevClass_...``
    and ``USB\\COMPOSITE`` (which Windows binds to its generic parent driver), and a child per
    interface: ``USB\\VID_v&PID_p&REV_rrrr&MI_nn``, ``USB\\VID_v&PID_p&MI_nn`` plus the
    interface's class ids. Linux binds drivers to interfaces, so interface modaliases are the
    ones that matter. Root hubs (sysfs ``usbN``) are Linux's view of the host controller, whose
    PCI id is what both OSes match; they are left out.
HD Audio codec
    hardware ``HDAUDIO\\FUNC_01&VEN_vvvv&DEV_dddd&SUBSYS_ssssssss&REV_rrrr`` and the same
    without REV; compatible ``...&VEN&DEV&REV``, ``...&VEN&DEV``, ``...&VEN``, ``HDAUDIO\\FUNC_01``.
    SUBSYS is the codec's 32-bit subsystem id as is (board maker in the high half: no swap).
    UNVERIFIED: REV as bits 23:8 of the 32-bit revision id (spec major, minor, vendor revision:
    0x00100101 gives REV_1001, as seen on real machines); the compatible list and its order; the
    ``CTRL_VEN``/``CTRL_DEV`` compatible ids Windows adds (naming the controller) are not made;
    FUNC_01 (audio function group) is assumed, as the inventory does not record modem codecs.
ACPI / PNP
    hardware ``ACPI\\VEN_vvv[v]&DEV_dddd``, ``ACPI\\<hid>``, ``*<hid>`` (the ``*`` form is how
    INFs name PNP ids); compatible ``ACPI\\<cid>``, ``*<cid>`` for each _CID. The _SUB and _HRV
    refinements (``&SUBSYS``, ``&REV``) are not in sysfs and not made. UNVERIFIED: that Windows
    lists the compatible ids in exactly this form and order.
"""

from __future__ import annotations

from dataclasses import dataclass

from peagent.inventory.model import AcpiDevice, HdaCodec, Inventory, PciDevice, UsbDevice, UsbInterface

# pci.ids' names for the classes a driver store cares about; other classes fall back to the base class.
_PCI_CLASSES = {
    "0100": "SCSI storage controller", "0101": "IDE interface", "0104": "RAID bus controller",
    "0106": "SATA controller", "0107": "Serial Attached SCSI controller", "0108": "Non-Volatile memory controller",
    "0200": "Ethernet controller", "0280": "Network controller", "0300": "VGA compatible controller",
    "0302": "3D controller", "0401": "Multimedia audio controller", "0403": "Audio device",
    "0600": "Host bridge", "0601": "ISA bridge", "0604": "PCI bridge", "0C03": "USB controller",
    "0C05": "SMBus", "0D11": "Bluetooth",
}
_PCI_BASE_CLASSES = {
    "00": "Unclassified device", "01": "Mass storage controller", "02": "Network controller",
    "03": "Display controller", "04": "Multimedia controller", "05": "Memory controller", "06": "Bridge",
    "07": "Communication controller", "08": "Generic system peripheral", "09": "Input device controller",
    "0C": "Serial bus controller", "0D": "Wireless controller", "10": "Encryption controller",
    "11": "Signal processing controller", "12": "Processing accelerators",
}


@dataclass(frozen=True)
class Device:
    """One device as driver matching sees it; ids most specific first (the order is part of the meaning)."""

    bus: str  # "pci", "usb", "hdaudio" or "acpi"
    description: str  # for people: where the device is and what it is
    hardware_ids: tuple[str, ...]
    compatible_ids: tuple[str, ...]
    modaliases: tuple[str, ...]  # matched by glob against modules.alias patterns


def pci_class_name(class_code: str) -> str:
    code = class_code.upper()
    return _PCI_CLASSES.get(code[:4]) or _PCI_BASE_CLASSES.get(code[:2], "PCI device")


def pci_modalias(dev: PciDevice) -> str:
    """The kernel's modalias for ``dev`` (drivers/pci/pci-sysfs.c), for inventories that lack one."""
    v, d, sv, sd = (x.upper().rjust(8, "0") for x in (dev.vendor, dev.device, dev.subsystem_vendor,
                                                      dev.subsystem_device))
    cc = dev.class_code.upper()
    return f"pci:v{v}d{d}sv{sv}sd{sd}bc{cc[0:2]}sc{cc[2:4]}i{cc[4:6]}"


def pci_ids(dev: PciDevice) -> Device:
    v, d = dev.vendor.upper(), dev.device.upper()
    cc = dev.class_code.upper()
    base = f"PCI\\VEN_{v}&DEV_{d}"
    rev = f"&REV_{dev.revision.upper()}"
    subsys = f"&SUBSYS_{dev.subsystem_device.upper()}{dev.subsystem_vendor.upper()}"
    hardware = (base + subsys + rev, base + subsys, base + rev, base, f"{base}&CC_{cc}", f"{base}&CC_{cc[:4]}")
    compatible = (base + rev, base, f"PCI\\VEN_{v}&CC_{cc}", f"PCI\\VEN_{v}&CC_{cc[:4]}", f"PCI\\VEN_{v}",
                  f"PCI\\CC_{cc}", f"PCI\\CC_{cc[:4]}")
    return Device(
        bus="pci",
        description=f"PCI {dev.slot} {v}:{d} ({pci_class_name(cc)} class {cc[:4]})",
        hardware_ids=hardware,
        compatible_ids=compatible,
        modaliases=(dev.modalias or pci_modalias(dev),),
    )


def _usb_class_ids(cls: str, sub: str | None, prot: str | None, prefix: str = "Class") -> tuple[str, ...]:
    """``USB\\Class_cc&SubClass_ss&Prot_pp`` and its shortenings, as far as the parts are known."""
    ids = [f"USB\\{prefix}_{cls}"]
    if sub is not None:
        ids.insert(0, f"USB\\{prefix}_{cls}&SubClass_{sub}")
        if prot is not None:
            ids.insert(0, f"USB\\{prefix}_{cls}&SubClass_{sub}&Prot_{prot}")
    return tuple(ids)


# Class 00 means "see the interfaces"; EF (miscellaneous, 02/01) is the interface-association form.
_COMPOSITE_CLASSES = {"00": ("00", "00", "00"), "EF": ("EF", "02", "01")}


def is_composite(dev: UsbDevice) -> bool:
    """Whether Windows loads its generic parent driver and gives each interface a device of its own."""
    return len(dev.interfaces) > 1 and dev.device_class.upper() in _COMPOSITE_CLASSES


def usb_ids(dev: UsbDevice) -> list[Device]:
    """The devices Windows would see for ``dev``: one, or a composite parent and one per interface."""
    if dev.path.startswith("usb"):  # a root hub: the host controller's PCI device stands for it
        return []
    vid, pid, rev = dev.vendor.upper(), dev.product.upper(), dev.revision.upper()
    base = f"USB\\VID_{vid}&PID_{pid}"
    name = " ".join(x for x in (dev.manufacturer, dev.product_name) if x)
    where = f"USB {dev.path} {vid}:{pid}" + (f" {name}" if name else "")
    hardware = (f"{base}&REV_{rev}", base)
    if not is_composite(dev):
        if dev.device_class.upper() == "00" and dev.interfaces:
            first = dev.interfaces[0]
            compatible = _usb_class_ids(*_iface_class(first))
        else:
            # The device descriptor's subclass and protocol are not inventoried: only the class is known.
            compatible = _usb_class_ids(dev.device_class.upper(), None, None)
        return [Device("usb", where, hardware, compatible, tuple(i.modalias for i in dev.interfaces if i.modalias))]
    # A composite's class triple is 00/00/00, or EF/02/01 (interface association) by definition.
    parent_compat = _usb_class_ids(*_COMPOSITE_CLASSES[dev.device_class.upper()], prefix="DevClass")
    found = [Device("usb", f"{where} (composite)", hardware, (*parent_compat, "USB\\COMPOSITE"), ())]
    for iface in dev.interfaces:
        mi = f"&MI_{iface.number.upper()}"
        cls = _iface_class(iface)
        found.append(Device(
            bus="usb",
            description=f"{where} interface {iface.number.upper()} (class {cls[0]})",
            hardware_ids=(f"{base}&REV_{rev}{mi}", f"{base}{mi}"),
            compatible_ids=_usb_class_ids(*cls),
            modaliases=(iface.modalias,) if iface.modalias else (),
        ))
    return found


def _iface_class(iface: UsbInterface) -> tuple[str, str, str]:
    return iface.interface_class.upper(), iface.interface_subclass.upper(), iface.interface_protocol.upper()


def hda_ids(codec: HdaCodec) -> Device:
    vendor, subsys, revision = codec.vendor_id.upper(), codec.subsystem_id.upper(), codec.revision_id.upper()
    ven, dev, rev = vendor[:4], vendor[4:], revision[2:6]  # revision bits 23:8 (UNVERIFIED, see above)
    func = "HDAUDIO\\FUNC_01"
    base = f"{func}&VEN_{ven}&DEV_{dev}"
    return Device(
        bus="hdaudio",
        description=f"HDAUDIO {codec.address} {ven}:{dev} (subsystem {subsys}, revision {revision})",
        hardware_ids=(f"{base}&SUBSYS_{subsys}&REV_{rev}", f"{base}&SUBSYS_{subsys}"),
        compatible_ids=(f"{base}&REV_{rev}", base, f"{func}&VEN_{ven}", func),
        modaliases=(codec.modalias,) if codec.modalias else (),
    )


def acpi_ids(dev: AcpiDevice) -> Device:
    hid = dev.hid.upper()
    # A PNP id has a 3-letter vendor (PNP0A08), an ACPI id a 4-character one (MSFT0101); DEV is the 4 hex digits.
    hardware = (f"ACPI\\VEN_{hid[:-4]}&DEV_{hid[-4:]}", f"ACPI\\{hid}", f"*{hid}")
    compatible = tuple(form for cid in dev.cids for form in (f"ACPI\\{cid.upper()}", f"*{cid.upper()}"))
    # The kernel gives PNP-bus devices no modalias; modules list PNP ids as pnp:dPNP0501* as well as acpi*:.
    modaliases = (dev.modalias,) if dev.modalias else tuple(f"pnp:d{i}" for i in (dev.hid, *dev.cids))
    also = f" (compatible {', '.join(dev.cids)})" if dev.cids else ""
    return Device("acpi", f"ACPI {dev.path} {hid}{also}", hardware, compatible, modaliases)


def devices(inventory: Inventory) -> list[Device]:
    """Every device of ``inventory`` a driver could be for: PCI, USB, HD Audio codecs, then ACPI/PNP."""
    found = [pci_ids(p) for p in inventory.pci]
    for u in inventory.usb:
        found.extend(usb_ids(u))
    found.extend(hda_ids(h) for h in inventory.hda)
    found.extend(acpi_ids(a) for a in inventory.acpi)
    return found
