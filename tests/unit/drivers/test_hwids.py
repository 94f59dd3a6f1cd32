"""Windows ids and Linux modaliases for real devices: golden lists, most specific first."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path

from peagent.drivers.hwids import Device, acpi_ids, devices, hda_ids, pci_ids, pci_modalias, usb_ids
from peagent.inventory import from_dict
from peagent.inventory.model import AcpiDevice, HdaCodec, Inventory, PciDevice, UsbDevice, UsbInterface

FIXTURES = Path(__file__).parents[1] / "fixtures"


def pci(slot: str, ven: str, dev: str, sv: str, sd: str, cc: str, rev: str, modalias: str = "") -> PciDevice:
    return PciDevice(slot=slot, vendor=ven, device=dev, subsystem_vendor=sv, subsystem_device=sd, class_code=cc,
                     revision=rev, modalias=modalias)


def test_the_research_example_dell_i219() -> None:
    alias = "pci:v00008086d000015B8sv00001028sd000007A1bc02sc00i00"
    got = pci_ids(pci("0000:00:1f.6", "8086", "15B8", "1028", "07A1", "020000", "10", alias))
    assert got == Device(
        bus="pci",
        description="PCI 0000:00:1f.6 8086:15B8 (Ethernet controller class 0200)",
        hardware_ids=(
            "PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028&REV_10",  # subsystem device first, then its vendor
            "PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028",
            "PCI\\VEN_8086&DEV_15B8&REV_10",
            "PCI\\VEN_8086&DEV_15B8",
            "PCI\\VEN_8086&DEV_15B8&CC_020000",
            "PCI\\VEN_8086&DEV_15B8&CC_0200",
        ),
        compatible_ids=(
            "PCI\\VEN_8086&DEV_15B8&REV_10",
            "PCI\\VEN_8086&DEV_15B8",
            "PCI\\VEN_8086&CC_020000",
            "PCI\\VEN_8086&CC_0200",
            "PCI\\VEN_8086",
            "PCI\\CC_020000",
            "PCI\\CC_0200",
        ),
        modaliases=(alias,),
    )


def test_qemu_e1000_and_a_modalias_made_when_the_inventory_has_none() -> None:
    got = pci_ids(pci("0000:00:02.0", "8086", "100E", "1AF4", "1100", "020000", "03"))
    assert got.description == "PCI 0000:00:02.0 8086:100E (Ethernet controller class 0200)"
    assert got.hardware_ids[:2] == ("PCI\\VEN_8086&DEV_100E&SUBSYS_11001AF4&REV_03",
                                    "PCI\\VEN_8086&DEV_100E&SUBSYS_11001AF4")
    assert got.modaliases == ("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",)
    # e1000's own alias line in modules.alias matches it the way kmod would
    assert fnmatchcase(got.modaliases[0], "pci:v00008086d0000100Esv*sd*bc*sc*i*")


def test_qemu_virtio_net_modern() -> None:
    got = pci_ids(pci("0000:00:03.0", "1AF4", "1041", "1AF4", "1100", "020000", "01",
                      "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00"))
    # virtio-win's netkvm.inf lists exactly the first of these
    assert got.hardware_ids == (
        "PCI\\VEN_1AF4&DEV_1041&SUBSYS_11001AF4&REV_01", "PCI\\VEN_1AF4&DEV_1041&SUBSYS_11001AF4",
        "PCI\\VEN_1AF4&DEV_1041&REV_01", "PCI\\VEN_1AF4&DEV_1041", "PCI\\VEN_1AF4&DEV_1041&CC_020000",
        "PCI\\VEN_1AF4&DEV_1041&CC_0200")
    assert got.compatible_ids[2:] == ("PCI\\VEN_1AF4&CC_020000", "PCI\\VEN_1AF4&CC_0200", "PCI\\VEN_1AF4",
                                      "PCI\\CC_020000", "PCI\\CC_0200")


def test_qemu_nvme_is_reachable_by_its_class() -> None:
    got = pci_ids(pci("0000:00:04.0", "1B36", "0010", "1AF4", "1100", "010802", "02",
                      "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02"))
    assert got.description == "PCI 0000:00:04.0 1B36:0010 (Non-Volatile memory controller class 0108)"
    assert got.hardware_ids[0] == "PCI\\VEN_1B36&DEV_0010&SUBSYS_11001AF4&REV_02"
    # stornvme.inf matches every NVMe controller by class: the last compatible ids
    assert got.compatible_ids[-2:] == ("PCI\\CC_010802", "PCI\\CC_0108")
    assert fnmatchcase(got.modaliases[0], "pci:v*d*sv*sd*bc01sc08i02*")  # nvme's class alias


def test_pci_modalias_is_the_kernels() -> None:
    dev = pci("0000:00:1f.2", "8086", "2922", "1AF4", "1100", "010601", "02")
    assert pci_modalias(dev) == "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"


LOGITECH = UsbDevice(  # a Unifying receiver: keyboard and mouse as two HID interfaces, device class 00
    path="1-1", vendor="046D", product="C52B", revision="1211", device_class="00", manufacturer="Logitech",
    product_name="USB Receiver",
    interfaces=(
        UsbInterface("00", "03", "01", "01", "usb:v046DpC52Bd1211dc00dsc00dp00ic03isc01ip01in00", "usbhid"),
        UsbInterface("01", "03", "01", "02", "usb:v046DpC52Bd1211dc00dsc00dp00ic03isc01ip02in01", "usbhid"),
    ),
)


def test_usb_composite_parent_and_one_device_per_interface() -> None:
    assert usb_ids(LOGITECH) == [
        Device("usb", "USB 1-1 046D:C52B Logitech USB Receiver (composite)",
               ("USB\\VID_046D&PID_C52B&REV_1211", "USB\\VID_046D&PID_C52B"),
               ("USB\\DevClass_00&SubClass_00&Prot_00", "USB\\DevClass_00&SubClass_00", "USB\\DevClass_00",
                "USB\\COMPOSITE"),
               ()),
        Device("usb", "USB 1-1 046D:C52B Logitech USB Receiver interface 00 (class 03)",
               ("USB\\VID_046D&PID_C52B&REV_1211&MI_00", "USB\\VID_046D&PID_C52B&MI_00"),
               ("USB\\Class_03&SubClass_01&Prot_01", "USB\\Class_03&SubClass_01", "USB\\Class_03"),
               ("usb:v046DpC52Bd1211dc00dsc00dp00ic03isc01ip01in00",)),
        Device("usb", "USB 1-1 046D:C52B Logitech USB Receiver interface 01 (class 03)",
               ("USB\\VID_046D&PID_C52B&REV_1211&MI_01", "USB\\VID_046D&PID_C52B&MI_01"),
               ("USB\\Class_03&SubClass_01&Prot_02", "USB\\Class_03&SubClass_01", "USB\\Class_03"),
               ("usb:v046DpC52Bd1211dc00dsc00dp00ic03isc01ip02in01",)),
    ]


def test_usb_interface_association_composite() -> None:
    webcam = UsbDevice(path="3-4", vendor="046D", product="0825", revision="0012", device_class="EF",
                       interfaces=(UsbInterface("00", "0E", "01", "00", ""), UsbInterface("01", "0E", "02", "00", "")))
    parent, *children = usb_ids(webcam)
    assert parent.compatible_ids == ("USB\\DevClass_EF&SubClass_02&Prot_01", "USB\\DevClass_EF&SubClass_02",
                                     "USB\\DevClass_EF", "USB\\COMPOSITE")
    assert [c.hardware_ids[1] for c in children] == ["USB\\VID_046D&PID_0825&MI_00", "USB\\VID_046D&PID_0825&MI_01"]
    assert [c.modaliases for c in children] == [(), ()]


def test_usb_single_function_devices_and_root_hubs() -> None:
    stick = UsbDevice(path="1-2", vendor="0781", product="5567", revision="0126", device_class="00",
                      interfaces=(UsbInterface("00", "08", "06", "50",
                                               "usb:v0781p5567d0126dc00dsc00dp00ic08isc06ip50in00"),))
    assert usb_ids(stick) == [Device(
        "usb", "USB 1-2 0781:5567",
        ("USB\\VID_0781&PID_5567&REV_0126", "USB\\VID_0781&PID_5567"),
        ("USB\\Class_08&SubClass_06&Prot_50", "USB\\Class_08&SubClass_06", "USB\\Class_08"),  # from the interface
        ("usb:v0781p5567d0126dc00dsc00dp00ic08isc06ip50in00",))]
    hub = UsbDevice(path="1-3", vendor="05E3", product="0608", revision="6060", device_class="09",
                    interfaces=(UsbInterface("00", "09", "00", "01", "usb:v05E3p0608d6060dc09dsc00dp01ic09isc00ip01in00"),))
    (got,) = usb_ids(hub)
    assert got.compatible_ids == ("USB\\Class_09",)  # the device descriptor's class: its subclass is not inventoried
    root = UsbDevice(path="usb1", vendor="1D6B", product="0002", revision="0601", device_class="09")
    assert usb_ids(root) == []


def test_qemu_hda_duplex_codec() -> None:
    codec = HdaCodec(address="hdaudioC0D0", vendor_id="1AF40022", subsystem_id="1AF40021", revision_id="00100101",
                     modalias="hdaudio:v1AF40022r00100101a01")
    assert hda_ids(codec) == Device(
        bus="hdaudio",
        description="HDAUDIO hdaudioC0D0 1AF4:0022 (subsystem 1AF40021, revision 00100101)",
        hardware_ids=("HDAUDIO\\FUNC_01&VEN_1AF4&DEV_0022&SUBSYS_1AF40021&REV_1001",
                      "HDAUDIO\\FUNC_01&VEN_1AF4&DEV_0022&SUBSYS_1AF40021"),
        compatible_ids=("HDAUDIO\\FUNC_01&VEN_1AF4&DEV_0022&REV_1001", "HDAUDIO\\FUNC_01&VEN_1AF4&DEV_0022",
                        "HDAUDIO\\FUNC_01&VEN_1AF4", "HDAUDIO\\FUNC_01"),
        modaliases=("hdaudio:v1AF40022r00100101a01",),
    )
    # file2alias's form for an hda_device_id with no revision: a codec driver's line matches this codec, not others
    assert fnmatchcase(codec.modalias, "hdaudio:v1AF40022r*a01*")
    assert not fnmatchcase(codec.modalias, "hdaudio:v10EC0269r*a01*")


def test_acpi_pnp_and_acpi_ids() -> None:
    bridge = AcpiDevice(path="PNP0A08:00", hid="PNP0A08", cids=("PNP0A03",), modalias="acpi:PNP0A08:PNP0A03:")
    assert acpi_ids(bridge) == Device(
        bus="acpi",
        description="ACPI PNP0A08:00 PNP0A08 (compatible PNP0A03)",
        hardware_ids=("ACPI\\VEN_PNP&DEV_0A08", "ACPI\\PNP0A08", "*PNP0A08"),
        compatible_ids=("ACPI\\PNP0A03", "*PNP0A03"),
        modaliases=("acpi:PNP0A08:PNP0A03:",),
    )
    tpm = acpi_ids(AcpiDevice(path="MSFT0101:00", hid="MSFT0101", modalias="acpi:MSFT0101:"))
    assert tpm.hardware_ids == ("ACPI\\VEN_MSFT&DEV_0101", "ACPI\\MSFT0101", "*MSFT0101")
    assert tpm.compatible_ids == () and fnmatchcase(tpm.modaliases[0], "acpi*:MSFT0101:*")  # tpm_crb's alias
    serial = acpi_ids(AcpiDevice(path="00:05", hid="PNP0501", cids=("PNP0500",)))  # PNPBIOS: no modalias from the kernel
    assert serial.modaliases == ("pnp:dPNP0501", "pnp:dPNP0500")
    assert fnmatchcase(serial.modaliases[0], "pnp:dPNP0501*")  # 8250_pnp's alias


def test_devices_of_a_captured_qemu_inventory() -> None:
    # Captured before HDA and ACPI were inventoried: it still loads, with none of either.
    inv = from_dict(json.loads((FIXTURES / "inventory-qemu-uefi-usb-boot.json").read_text()))
    got = devices(inv)
    assert [d.description for d in got] == [
        "PCI 0000:00:00.0 8086:29C0 (Host bridge class 0600)",
        "PCI 0000:00:01.0 8086:2922 (SATA controller class 0106)",
        "PCI 0000:00:02.0 1B36:000D (USB controller class 0C03)",
        "PCI 0000:00:03.0 1AF4:1001 (SCSI storage controller class 0100)",
        "PCI 0000:00:04.0 1B36:0010 (Non-Volatile memory controller class 0108)",
        "PCI 0000:00:05.0 1AF4:1000 (Ethernet controller class 0200)",
        "PCI 0000:00:1f.0 8086:2918 (ISA bridge class 0601)",
        "PCI 0000:00:1f.2 8086:2922 (SATA controller class 0106)",
        "PCI 0000:00:1f.3 8086:2930 (SMBus class 0C05)",
        "USB 2-1 46F4:0001 QEMU QEMU USB HARDDRIVE",  # the two xHCI root hubs are left out
    ]
    # viostor.inf's id for the legacy virtio block device
    assert "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00" in got[3].hardware_ids


def test_devices_in_bus_order() -> None:
    inv = Inventory(
        pci=(pci("0000:00:02.0", "8086", "100E", "1AF4", "1100", "020000", "03"),),
        usb=(LOGITECH,),
        hda=(HdaCodec("hdaudioC0D0", "1AF40022", "1AF40021", "00100101", "hdaudio:v1AF40022r00100101a01"),),
        acpi=(AcpiDevice("PNP0A08:00", "PNP0A08", ("PNP0A03",), "acpi:PNP0A08:PNP0A03:"),),
    )
    assert [d.bus for d in devices(inv)] == ["pci", "usb", "usb", "usb", "hdaudio", "acpi"]
