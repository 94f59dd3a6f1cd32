"""Putting matched Windows driver packages into a freshly written Windows, offline, from the PE.

Windows cannot run DISM here, so peagent does what DISM's effect comes to, in the three ways that
work offline from Linux (research notes section 4; virt-v2v and FOG do the same):

1. the packages are copied whole (INF, catalog, .sys, ...) to ``C:\\Drivers\\peagent\\<package>``;
2. each folder is appended to ``DevicePath`` (SOFTWARE ``Microsoft\\Windows\\CurrentVersion``,
   REG_EXPAND_SZ, ``%SystemRoot%\\inf`` kept first): Plug and Play searches it for devices it
   finds without a driver;
3. because DevicePath alone is not reliable on Windows 8 and later (the driver store comes first),
   a first-boot command stages and installs them: ``pnputil /add-driver ... /subdirs /install``
   (Windows 10 1607 and later), ``pnputil -i -a`` per package before; it runs in the answer
   file's specialize pass (peagent.state.unattend's RunSynchronous), as SYSTEM, before logon.

A **boot-critical** driver (class SCSIAdapter or HDC: the boot disk is behind it) cannot wait for
that: Windows would stop with INACCESSIBLE_BOOT_DEVICE before running any command. So, as
virt-v2v does, its driver file goes to ``System32\\drivers``, its service is created in the SYSTEM
hive (Type 1, Start 0: loaded at boot) and each matched hardware id is entered in
``Control\\CriticalDeviceDatabase`` with the service and class GUID, which binds the device to
it before Plug and Play runs. Windows 8 and later keep that binding in the DriverDatabase
instead; there the boot-start service still loads and pnputil completes the installation at the
first boot (said in the report).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from peagent.drivers.services import service_of
from peagent.errors import DeviceError
from peagent.state import rootfs
from peagent.state.hive import open_hive, windows_path

DRIVERS_DIR = "Drivers/peagent"
BOOT_CRITICAL_CLASSES = {
    "{4d36e97b-e325-11ce-bfc1-08002be10318}": "SCSIAdapter",
    "{4d36e96a-e325-11ce-bfc1-08002be10318}": "HDC",
}
PNPUTIL_ADD_DRIVER_BUILD = 14393  # Windows 10 1607: pnputil /add-driver


@dataclass(frozen=True)
class WindowsDriver:
    package: str  # the package's id in the store, a relative path
    files: Path  # the fetched, verified package directory in the PE
    inf: str  # the INF's path inside the package
    install_section: str
    class_guid: str | None
    matched_ids: tuple[str, ...]  # the device ids it was chosen for

    @property
    def folder(self) -> str:
        return self.package.replace("/", "_").replace("\\", "_")

    @property
    def boot_critical(self) -> bool:
        return (self.class_guid or "").lower() in BOOT_CRITICAL_CLASSES


def inject_windows(root: Path, drivers: Sequence[WindowsDriver], *, arch: str,
                   build: int | None) -> tuple[list[str], list[str]]:
    """Install ``drivers`` into the Windows at ``root``: (report lines, first-boot commands)."""
    if not drivers:
        return [], []
    report: list[str] = []
    folders: list[str] = []
    for driver in dict((d.package, d) for d in drivers).values():
        rel = f"{DRIVERS_DIR}/{driver.folder}"
        for path in sorted(driver.files.rglob("*")):
            if path.is_file() and not path.is_symlink():
                rootfs.write_file(root, f"{rel}/{path.relative_to(driver.files).as_posix()}", path.read_bytes(), 0o644)
        folders.append(str(PureWindowsPath("%SystemDrive%", *rel.split("/"))))
        report.append(f"driver package {driver.package} -> C:\\{PureWindowsPath(*rel.split('/'))}")
    report.append(_device_path(root, folders))
    for driver in drivers:
        if driver.boot_critical:
            report += _register_boot_critical(root, driver, arch)
    base = str(PureWindowsPath("%SystemDrive%", *DRIVERS_DIR.split("/")))
    if build is not None and build >= PNPUTIL_ADD_DRIVER_BUILD:
        commands = [f"pnputil.exe /add-driver {base}\\*.inf /subdirs /install"]
    else:
        commands = [f"pnputil.exe -i -a {folder}\\*.inf" for folder in folders]
    report.append(f"first boot (specialize): {'; '.join(commands)}")
    return report, commands


def _device_path(root: Path, folders: list[str]) -> str:
    software = windows_path(root, "Windows/System32/config/SOFTWARE")
    if software is None:
        raise DeviceError("the new Windows has no SOFTWARE hive: cannot add its drivers to DevicePath")
    hive = open_hive(software, write=True)
    key = r"Microsoft\Windows\CurrentVersion"
    current = hive.string(key, "DevicePath") or r"%SystemRoot%\inf"
    parts = [p for p in current.split(";") if p]
    parts += [f for f in folders if f.lower() not in {p.lower() for p in parts}]
    hive.set_string(key, "DevicePath", ";".join(parts), expand=True)
    hive.commit()
    return f"DevicePath: {';'.join(parts)}"


def _register_boot_critical(root: Path, driver: WindowsDriver, arch: str) -> list[str]:
    inf_path = driver.files / driver.inf
    service = service_of(inf_path.read_bytes(), driver.install_section, arch)
    if service is None:
        return [f"{driver.package}: boot-critical ({BOOT_CRITICAL_CLASSES[(driver.class_guid or '').lower()]}), but "
                f"its INF names no service for {driver.install_section}: left to Plug and Play at first boot"]
    binary = next((p for p in driver.files.rglob("*") if p.name.lower() == service.binary.lower()), None)
    if binary is None:
        raise DeviceError(f"{driver.package}: its INF installs {service.binary}, which the package does not hold")
    target = windows_path(root, "Windows/System32/drivers", want="dir")
    if target is None:
        raise DeviceError("the new Windows has no Windows/System32/drivers folder")
    rootfs.write_file(root, f"{target.relative_to(root).as_posix()}/{service.binary}", binary.read_bytes(), 0o644)
    system = windows_path(root, "Windows/System32/config/SYSTEM")
    if system is None:
        raise DeviceError("the new Windows has no SYSTEM hive: cannot register its boot-critical driver")
    hive = open_hive(system, write=True)
    control_set = hive.control_set() or "ControlSet001"
    svc = f"{control_set}\\Services\\{service.name}"
    hive.make_key(svc)
    hive.set_dword(svc, "Type", 1)
    hive.set_dword(svc, "Start", 0)
    hive.set_dword(svc, "ErrorControl", service.error_control)
    hive.set_string(svc, "ImagePath", f"System32\\drivers\\{service.binary}", expand=True)
    if service.group:
        hive.set_string(svc, "Group", service.group)
    for device_id in driver.matched_ids:
        cdd = f"{control_set}\\Control\\CriticalDeviceDatabase\\{device_id.replace(chr(92), '#').lower()}"
        hive.make_key(cdd)
        hive.set_string(cdd, "Service", service.name)
        hive.set_string(cdd, "ClassGUID", (driver.class_guid or "").upper())
    hive.commit()
    return [f"{driver.package}: boot-critical: {service.binary} -> System32\\drivers, service {service.name} "
            f"(boot start), CriticalDeviceDatabase for {', '.join(driver.matched_ids)} (Windows 8 and later bind it "
            "through pnputil at the first boot)"]
