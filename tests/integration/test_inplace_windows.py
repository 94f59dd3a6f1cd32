"""Windows in place, through `peagent.deploy`: an NTFS partition (a loop device) holding an "old
Windows" and a user's files, and a new Windows as a WIM on the embedded DP.

The old Windows is what the detection and the policy need (a SYSTEM hive, Program Files,
ProgramData, pagefile.sys) beside a user's document with a security descriptor and a named stream
of its own; the new one, captured in wimlib's NTFS mode, carries Windows metadata too. After the
deploy the old OS is gone, the new one is there with its metadata, and the user's files are back
with theirs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from peagent import deploy as deploy_module
from peagent.deploy import DeployOptions, deploy
from peagent.drivers.store import index_store, write_index
from peagent.errors import VerifyError
from peagent.files import ntfs, wim
from peagent.inventory import Inventory, Nic, PciDevice
from peagent.state.hive import open_hive
from peagent.status import Reporter
from tests.integration.test_wim import FILE_SD, ZONE, xattr
from tests.support.blockdev import inspect
from tests.support.dp import embedded_dp
from tests.support.hive import PRODUCT_KEY, security_tree, software_tree, system_tree, windows_tree

pytestmark = pytest.mark.root

MiB = 1 << 20
NEW_SD = FILE_SD


@pytest.fixture
def site(loop, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The embedded DP serving new.wim (a new Windows, captured from an NTFS volume); its URL and sha256."""
    device = loop(32 * MiB)
    subprocess.run(["mkntfs", "--fast", "--quiet", "--force", device], check=True)
    (tmp_path / "golden").mkdir()
    with ntfs.mounted(device, tmp_path / "golden") as root:
        # The new Windows: generalized, its own (image) computer name, no product key.
        windows_tree(root, system=system_tree(mac_override=None), software=software_tree(key=None))
        (root / "Windows" / "System32" / "drivers").mkdir()
        (root / "Windows" / "explorer.exe").write_bytes(b"MZ new explorer")
        os.setxattr(root / "Windows" / "explorer.exe", "system.ntfs_acl", NEW_SD)
        (root / "Users" / "Default").mkdir(parents=True)
        (root / "Users" / "Public").mkdir()
        (root / "Users" / "Public" / "desktop.ini").write_text("new public\r\n")
    dp = tmp_path / "dp"
    (dp / "images").mkdir(parents=True)
    wim.capture(device, dp / "images" / "new.wim", "Windows New")
    driver_store(dp / "drivers")
    digest = hashlib.sha256((dp / "images" / "new.wim").read_bytes()).hexdigest()
    with embedded_dp(dp) as server:
        yield server.url, digest


@pytest.fixture
def disk(loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A GPT disk whose one NTFS partition holds the old Windows and a user's data."""
    device = loop(128 * MiB)
    subprocess.run(["sgdisk", "-n1:1M:0", "-t1:0700", device], check=True, capture_output=True)
    subprocess.run(["partprobe", device], check=True)
    subprocess.run(["mkntfs", "--fast", "--quiet", "--force", "-L", "Windows", f"{device}p1"], check=True)
    (tmp_path / "old").mkdir()
    with ntfs.mounted(f"{device}p1", tmp_path / "old") as root:
        # The old Windows: WS-0042, owner IT, a product key, a static address for the NIC this machine has.
        windows_tree(root, system=system_tree(), software=software_tree(), security=security_tree(member=False))
        (root / "Windows" / "old.dll").write_bytes(os.urandom(2 * MiB))
        (root / "Program Files" / "Old App").mkdir(parents=True)
        (root / "Program Files" / "Old App" / "app.exe").write_bytes(os.urandom(MiB))
        (root / "ProgramData" / "Vendor").mkdir(parents=True)
        (root / "pagefile.sys").write_bytes(os.urandom(4 * MiB))
        thesis = root / "Users" / "Alice" / "Documents" / "Thesis.docx"
        thesis.parent.mkdir(parents=True)
        thesis.write_bytes(b"years of work")
        os.setxattr(thesis, "system.ntfs_acl", FILE_SD)
        os.setxattr(thesis, "user.Zone.Identifier", ZONE)
        (root / "Users" / "Public").mkdir()
        (root / "Users" / "Public" / "desktop.ini").write_text("old public\r\n")
        (root / "Data").mkdir()
        (root / "Data" / "ledger.xlsx").write_bytes(b"numbers")
    monkeypatch.setattr(deploy_module, "collect", lambda: Inventory(disks=(inspect(device),),
                                                                    nics=(Nic("eth0", "52:54:00:12:34:56"),),
                                                                    pci=(NIC, NVME)))
    return device


def task(tmp_path: Path, url: str, digest: str, device: str, state: dict | None = None) -> str:
    path = tmp_path / "task.json"
    path.write_text(json.dumps({
        "version": 1, "id": "win-inplace-1", "dps": [url], "after": "none",
        "target": {"hints": {"name": device}, "inplace": {"headroom": "1MiB"}},
        "image": {"wim": "images/new.wim", "sha256": digest, "index": 1}, **({"state": state} if state else {})}))
    return str(path)


ADMIN_PASSWORD = "Tr0ub4dor&3-never-logged"
NIC = PciDevice(slot="0000:00:02.0", vendor="8086", device="100E", subsystem_vendor="1AF4", subsystem_device="1100",
                class_code="020000", revision="03", modalias="pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00")
NVME = PciDevice(slot="0000:00:04.0", vendor="1B36", device="0010", subsystem_vendor="1AF4", subsystem_device="1100",
                 class_code="010802", revision="02", modalias="pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02")


def driver_store(root: Path) -> None:
    """Two Windows packages this machine's devices match (a NIC; an NVMe controller, boot-critical), one
    for another architecture that also matches, and the index, pinned by the task."""
    for arch in ("amd64", "arm64"):
        nic = root / f"windows/_generic/_generic/_generic/{arch}/acme-lan"
        nic.mkdir(parents=True)
        (nic / "acmelan.inf").write_text(
            '[Version]\nSignature="$Windows NT$"\nClass=Net\nClassGuid={4d36e972-e325-11ce-bfc1-08002be10318}\n'
            f'CatalogFile=acmelan.cat\nDriverVer=05/01/2024,3.0.0.1\n[Manufacturer]\nAcme=Acme,NT{arch}\n'
            f'[Acme.NT{arch}]\nLAN=LAN_Inst, PCI\\VEN_8086&DEV_100E\n')
        (nic / "acmelan.sys").write_bytes(b"MZ lan " + arch.encode())
    storage = root / "windows/_generic/_generic/_generic/amd64/acme-nvme"
    storage.mkdir(parents=True)
    (storage / "acmenvme.inf").write_text(
        '[Version]\nSignature="$Windows NT$"\nClass=SCSIAdapter\nClassGuid={4D36E97B-E325-11CE-BFC1-08002BE10318}\n'
        'DriverVer=03/01/2024,2.1.0.7\n[Manufacturer]\nAcme=Acme,NTamd64\n[Acme.NTamd64]\n'
        'NVMe=NVMe_Inst, PCI\\CC_010802\n[NVMe_Inst.NTamd64]\nCopyFiles=NVMe_Files\n[NVMe_Inst.NTamd64.Services]\nAddService=acmenvme,0x2,NVMe_Svc\n'
        '[NVMe_Svc]\nServiceType=1\nStartType=0\nErrorControl=1\nServiceBinary=%12%\\acmenvme.sys\n'
        'LoadOrderGroup=SCSI miniport\n')
    (storage / "acmenvme.sys").write_bytes(b"MZ nvme")
    index = index_store(root)
    assert not index.warnings, index.warnings
    write_index(index, root, None)


def test_the_old_windows_identity_is_captured_before_the_wipe_and_given_to_the_new_one(site, disk, tmp_path) -> None:
    url, digest = site
    reporter = Reporter(None)
    state = {"migrate": ["computer_name", "user_name", "organization", "product_key", "ip_address", "timezone"],
             "admin_password": ADMIN_PASSWORD, "workgroup": "LAB"}
    path = Path(task(tmp_path, url, digest, disk, state))
    doc = json.loads(path.read_text())
    pin = hashlib.sha256(requests.get(f"{url}drivers/index.json", timeout=10).content).hexdigest()
    doc["drivers"] = {"index": "drivers/index.json", "index_sha256": pin}
    path.write_text(json.dumps(doc))
    deploy(DeployOptions(task=str(path), journal_dir=tmp_path / "run"), reporter)
    events = reporter.events()
    (tmp_path / "check").mkdir()
    with ntfs.mounted(f"{disk}p1", tmp_path / "check", readonly=True) as root:
        xml = (root / "Windows" / "Panther" / "unattend.xml").read_text()
        record = json.loads((root / "ProgramData" / "peagent" / "deployment.json").read_text())
        setup_complete = (root / "Windows" / "Setup" / "Scripts" / "SetupComplete.cmd").read_text()
        # Drivers: the matching amd64 packages only, on DevicePath, the storage driver registered for boot.
        assert sorted(os.listdir(root / "Drivers" / "peagent")) == [
            "windows__generic__generic__generic_amd64_acme-lan", "windows__generic__generic__generic_amd64_acme-nvme"]
        assert (root / "Windows/System32/drivers/acmenvme.sys").read_bytes() == b"MZ nvme"
        for hive in ("SOFTWARE", "SYSTEM"):  # read after the unmount: hivex keeps its file open
            shutil.copy(root / "Windows/System32/config" / hive, tmp_path / hive)
    software = open_hive(tmp_path / "SOFTWARE")
    assert "acme-lan" in software.string(r"Microsoft\Windows\CurrentVersion", "DevicePath")
    system = open_hive(tmp_path / "SYSTEM")
    assert system.dword(r"ControlSet002\Services\acmenvme", "Start") == 0
    assert "<ComputerName>WS-0042</ComputerName>" in xml  # captured from the old Windows' SYSTEM hive
    assert "<RegisteredOwner>IT</RegisteredOwner>" in xml and "<TimeZone>W. Europe Standard Time</TimeZone>" in xml
    assert f"<ProductKey>{PRODUCT_KEY}</ProductKey>" in xml  # decoded from DigitalProductId
    assert "<Identifier>52-54-00-12-34-56</Identifier>" in xml and "192.168.10.50/24" in xml
    assert "<JoinWorkgroup>LAB</JoinWorkgroup>" in xml
    assert ADMIN_PASSWORD not in xml  # encoded, as unattend.xml wants it
    assert r"pnputil.exe /add-driver %SystemDrive%\Drivers\peagent\*.inf /subdirs /install" in xml
    drivers = [e["message"] for e in events if e["phase"] == "drivers"]
    assert any("acme-nvme (acmenvme.inf [NVMe_Inst], group generic); matched PCI\\CC_010802" in m for m in drivers)
    assert not any("arm64" in m for m in drivers if "matched" in m)  # another architecture: never
    assert "firstboot.ps1" in setup_complete
    assert record["deployment_id"] == "win-inplace-1" and record["state"]["computer_name"] == "WS-0042"
    assert record["state"]["product_key"] == "<secret>"
    shown = json.dumps(events, default=str)
    for secret in (ADMIN_PASSWORD, PRODUCT_KEY):
        assert secret not in shown  # not in status, not in the captured state the DP gets
    capture = next(e for e in events if e["phase"] == "capture" and e["data"])
    assert capture["data"]["computer_name"] == "WS-0042" and capture["data"]["product_key"] == "<secret>"
    assert not (tmp_path / "run" / "captured-win-inplace-1.json").exists()  # given to the new OS: not kept


def test_the_old_windows_goes_the_new_one_comes_and_alice_s_files_stay(site, disk, tmp_path) -> None:
    url, digest = site
    reporter = Reporter(None)
    deploy(DeployOptions(task=task(tmp_path, url, digest, disk), journal_dir=tmp_path / "run"), reporter)
    events = reporter.events()
    (tmp_path / "check").mkdir()
    with ntfs.mounted(f"{disk}p1", tmp_path / "check", readonly=True) as root:
        # ProgramData/peagent, Panther and Setup hold the deployment record, answer file and first-boot report.
        assert sorted(os.listdir(root)) == ["Data", "ProgramData", "Users", "Windows"]
        assert sorted(os.listdir(root / "ProgramData")) == ["peagent"]
        assert sorted(os.listdir(root / "Windows")) == ["Panther", "Setup", "System32", "explorer.exe"]  # not old.dll
        assert xattr(root / "Windows" / "explorer.exe", "system.ntfs_acl") == NEW_SD  # NTFS mode: metadata kept
        assert sorted(os.listdir(root / "Users")) == ["Alice", "Default", "Public"]
        thesis = root / "Users" / "Alice" / "Documents" / "Thesis.docx"
        assert thesis.read_bytes() == b"years of work"
        assert xattr(thesis, "system.ntfs_acl") == FILE_SD and xattr(thesis, "user.Zone.Identifier") == ZONE
        assert (root / "Users" / "Public" / "desktop.ini").read_bytes() == b"new public\r\n"  # the new OS's wins
        assert (root / "Data" / "ledger.xlsx").read_bytes() == b"numbers"
    messages = [f"{e['phase']}: {e['message']}" for e in events]
    assert any("inplace: partition 1 (ntfs): Windows (Windows/System32/config/SYSTEM)" in m for m in messages)
    assert any("kept Users/Public/desktop.ini: the new OS has its own" in m for m in messages)
    assert "done" in [e["phase"] for e in events]


def test_a_wim_that_does_not_match_its_sha256_is_refused_before_anything_is_deleted(site, disk, tmp_path) -> None:
    url, _ = site
    with pytest.raises(VerifyError):
        deploy(DeployOptions(task=task(tmp_path, url, "0" * 64, disk), journal_dir=tmp_path / "run"), Reporter(None))
    (tmp_path / "check").mkdir()
    with ntfs.mounted(f"{disk}p1", tmp_path / "check", readonly=True) as root:
        assert sorted(os.listdir(root)) == ["Data", "Program Files", "ProgramData", "Users", "Windows", "pagefile.sys"]
    assert not list((tmp_path / "run" / "wim").iterdir())  # no unverified WIM kept


def test_a_rerun_after_a_cut_apply_resumes_and_brings_the_users_back(site, disk, tmp_path, monkeypatch) -> None:
    url, digest = site
    from peagent.inplace import windows
    real = windows.wim.apply

    def cut(image, index, target, **kw):  # wimlib starts, and the power goes
        real(image, index, target, **kw)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(windows.wim, "apply", cut)
    with pytest.raises(KeyboardInterrupt):
        deploy(DeployOptions(task=task(tmp_path, url, digest, disk), journal_dir=tmp_path / "run"), Reporter(None))
    (tmp_path / "check").mkdir()
    with ntfs.mounted(f"{disk}p1", tmp_path / "check", readonly=True) as root:
        assert "peagent.kept" in os.listdir(root)  # the users wait there
        assert json.loads((root / ".peagent-inplace.json").read_text())["phase"] == "apply"
    monkeypatch.setattr(windows.wim, "apply", real)
    reporter = Reporter(None)
    deploy(DeployOptions(task=task(tmp_path, url, digest, disk), journal_dir=tmp_path / "run"), reporter)
    events = reporter.events()
    assert any("resuming" in e["message"] and "(at: apply)" in e["message"] for e in events)
    with ntfs.mounted(f"{disk}p1", tmp_path / "check", readonly=True) as root:
        assert sorted(os.listdir(root)) == ["Data", "ProgramData", "Users", "Windows"]
        assert (root / "Users" / "Alice" / "Documents" / "Thesis.docx").read_bytes() == b"years of work"
