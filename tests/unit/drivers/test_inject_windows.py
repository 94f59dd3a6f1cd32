"""Windows injection into a tree with real hives: files, DevicePath, boot-critical registration, pnputil."""

from __future__ import annotations

from pathlib import Path

from peagent.drivers.inject_windows import WindowsDriver, inject_windows
from peagent.drivers.services import service_of
from peagent.state.hive import open_hive
from tests.support.hive import software_tree, system_tree, windows_tree

STORAGE_INF = r"""[Version]
Signature="$Windows NT$"
Class=SCSIAdapter
ClassGuid={4D36E97B-E325-11CE-BFC1-08002BE10318}
CatalogFile=acmenvme.cat
DriverVer=03/01/2024,2.1.0.7
[Manufacturer]
%Acme%=Acme,NTamd64
[Acme.NTamd64]
%Dev%=AcmeNVMe_Inst, PCI\VEN_1B36&DEV_0010
[AcmeNVMe_Inst.NTamd64]
CopyFiles=Drivers_Dir
[AcmeNVMe_Inst.NTamd64.Services]
AddService = acmenvme, %SPSVCINST_ASSOCSERVICE%, AcmeNVMe_Service
AddService = acmehelper, 0, Helper_Service
[AcmeNVMe_Service]
ServiceType    = 1
StartType      = 3
ErrorControl   = 1
ServiceBinary  = %12%\AcmeNVMe.sys
LoadOrderGroup = SCSI Miniport
[Helper_Service]
ServiceBinary  = %12%\helper.sys
[Strings]
SPSVCINST_ASSOCSERVICE = 0x00000002
Acme="Acme"
Dev="Acme NVMe"
"""


def new_windows(tmp_path: Path) -> Path:
    root = tmp_path / "win"
    windows_tree(root, system=system_tree(), software=software_tree())
    (root / "Windows/System32/drivers").mkdir(parents=True)
    return root


def packages(tmp_path: Path) -> tuple[WindowsDriver, WindowsDriver]:
    storage = tmp_path / "store/windows/_generic/acme-nvme"
    storage.mkdir(parents=True)
    (storage / "acmenvme.inf").write_text(STORAGE_INF)
    (storage / "acmenvme.sys").write_bytes(b"MZ storage driver")  # the INF says AcmeNVMe.sys: case differs
    (storage / "acmenvme.cat").write_bytes(b"catalog")
    nic = tmp_path / "store/windows/QEMU/Standard PC/e1000"
    nic.mkdir(parents=True)
    (nic / "e1g.inf").write_text("[Version]\nSignature=\"$Windows NT$\"\n")
    (nic / "e1g.sys").write_bytes(b"MZ nic")
    return (WindowsDriver("windows/_generic/acme-nvme", storage, "acmenvme.inf", "AcmeNVMe_Inst",
                          "{4d36e97b-e325-11ce-bfc1-08002be10318}", (r"PCI\VEN_1B36&DEV_0010",)),
            WindowsDriver("windows/QEMU/Standard PC/e1000", nic, "e1g.inf", "E1000", "{4d36e972-e325-11ce-bfc1-"
                          "08002be10318}", (r"PCI\VEN_8086&DEV_100E",)))


def test_the_function_drivers_service_is_read_from_the_decorated_install_section() -> None:
    spec = service_of(STORAGE_INF.encode(), "AcmeNVMe_Inst", "amd64")
    assert spec is not None and (spec.name, spec.binary, spec.group) == ("acmenvme", "AcmeNVMe.sys", "SCSI Miniport")
    assert service_of(STORAGE_INF.encode(), "Other_Inst", "amd64") is None


def test_packages_are_copied_added_to_devicepath_and_installed_at_first_boot(tmp_path: Path) -> None:
    root = new_windows(tmp_path)
    storage, nic = packages(tmp_path)
    report, commands = inject_windows(root, [storage, nic], arch="amd64", build=19045)
    assert (root / "Drivers/peagent/windows_QEMU_Standard PC_e1000/e1g.sys").read_bytes() == b"MZ nic"
    assert (root / "Drivers/peagent/windows__generic_acme-nvme/acmenvme.inf").exists()
    software = open_hive(root / "Windows/System32/config/SOFTWARE")
    assert software.string(r"Microsoft\Windows\CurrentVersion", "DevicePath") == (
        r"%SystemRoot%\inf;%SystemDrive%\Drivers\peagent\windows__generic_acme-nvme;"
        r"%SystemDrive%\Drivers\peagent\windows_QEMU_Standard PC_e1000")
    assert commands == [r"pnputil.exe /add-driver %SystemDrive%\Drivers\peagent\*.inf /subdirs /install"]
    # The storage driver: loaded at boot and bound to its device before Plug and Play runs.
    assert (root / "Windows/System32/drivers/AcmeNVMe.sys").read_bytes() == b"MZ storage driver"
    system = open_hive(root / "Windows/System32/config/SYSTEM")
    svc = r"ControlSet002\Services\acmenvme"  # the control set Select\Current names
    assert (system.dword(svc, "Type"), system.dword(svc, "Start"), system.dword(svc, "ErrorControl")) == (1, 0, 1)
    assert system.string(svc, "ImagePath") == r"System32\drivers\AcmeNVMe.sys"
    assert system.string(svc, "Group") == "SCSI Miniport"
    cdd = r"ControlSet002\Control\CriticalDeviceDatabase\pci#ven_1b36&dev_0010"
    assert system.string(cdd, "Service") == "acmenvme"
    assert system.string(cdd, "ClassGUID") == "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
    assert any("boot-critical: AcmeNVMe.sys -> System32\\drivers, service acmenvme" in line for line in report)
    assert not any("e1000" in line and "boot-critical" in line for line in report)


def test_before_windows_10_1607_pnputil_takes_each_package(tmp_path: Path) -> None:
    root = new_windows(tmp_path)
    _, nic = packages(tmp_path)
    _, commands = inject_windows(root, [nic], arch="amd64", build=7601)
    assert commands == [r"pnputil.exe -i -a %SystemDrive%\Drivers\peagent\windows_QEMU_Standard PC_e1000\*.inf"]
    inject_windows(root, [nic], arch="amd64", build=7601)  # a rerun does not add the folder twice
    software = open_hive(root / "Windows/System32/config/SOFTWARE")
    assert software.string(r"Microsoft\Windows\CurrentVersion", "DevicePath").count("e1000") == 1
