"""Giving a new Windows its state: fake Windows trees in tmp_path with hives from tests/support/hive.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import hivex
import pytest

from peagent.errors import FilesystemError, ImageError
from peagent.state.hive import REG_SZ
from peagent.state.model import DomainJoin, Interface, MachineState, Secret
from peagent.state.sysprep_inf import sysprep_inf
from peagent.state.unattend import OOBE_WINDOWS_7, unattend_xml
from peagent.state.windows_target import (
    UNATTEND_FILE_VALUE,
    WindowsImage,
    complete_event,
    describe_windows,
    firstboot_powershell,
    place_windows,
    setup_complete_cmd,
)
from peagent.status import validate_event
from tests.support.hive import software_tree, system_tree, windows_tree

STATE = MachineState(
    computer_name="WS-0042", owner="IT", organization="Example Corp", timezone="W. Europe Standard Time",
    product_key=Secret("W269N-WFGWX-YVC9B-4J6C9-T83GX"), admin_password=Secret("Adm1n-Secret!"),
    domain=DomainJoin("corp.example.com", "svc-join", Secret("Join-Secret?")),
    interfaces=(Interface(mac="52:54:00:12:34:56", dhcp=False, addresses=("192.168.10.50/24",),
                          gateway="192.168.10.1", dns=("192.168.10.2",)),))
SECRETS = ("W269N-WFGWX-YVC9B-4J6C9-T83GX", "Adm1n-Secret!", "Join-Secret?", "tok-3f9a")
RECORD = b'{"deployment_id": "d-42"}\n'
SCRIPT = firstboot_powershell("https://dp.example.com/status/d-42", "d-42", Secret("tok-3f9a"))


def windows(root: Path, *, system: dict[str, Any] | None = None, software: dict[str, Any] | None = None,
            files: tuple[str, ...] = ()) -> Path:
    windows_tree(root, system=system or system_tree(), software=software or software_tree())
    for rel in ("Windows/Panther", "Windows/System32/Sysprep", "Windows/SysWOW64", "ProgramData"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"<image's own " + rel.encode() + b">")
    return root


# describe_windows ----------------------------------------------------------------------------------------------


def test_describe_windows_10(tmp_path: Path) -> None:
    image = describe_windows(windows(tmp_path))
    assert image == WindowsImage(arch="amd64", version="10.0.19045", major=10, minor=0, build=19045,
                                 product="Windows 10 Pro", pre_vista=False, generalized=True,
                                 image_state="IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE")


def test_arch_from_the_registry_else_from_the_tree(tmp_path: Path) -> None:
    assert describe_windows(windows(tmp_path / "a", system=system_tree(arch="ARM64"))).arch == "arm64"
    assert describe_windows(windows(tmp_path / "b", system=system_tree(arch="x86"))).arch == "x86"
    unnamed = system_tree()
    del unnamed["ControlSet002"]["Control"]["Session Manager"]["Environment"]["PROCESSOR_ARCHITECTURE"]
    assert describe_windows(windows(tmp_path / "c", system=unnamed)).arch == "amd64"  # SysWOW64 is there
    (tmp_path / "c/Windows/SysArm32").mkdir()
    assert describe_windows(tmp_path / "c").arch == "arm64"
    (tmp_path / "d").mkdir()
    windows_tree(tmp_path / "d", system=unnamed, software=software_tree())
    assert describe_windows(tmp_path / "d").arch == "x86"
    with pytest.raises(ImageError, match="IA64"):
        describe_windows(windows(tmp_path / "e", system=system_tree(arch="IA64")))


def test_windows_xp_is_pre_vista(tmp_path: Path) -> None:
    root = windows(tmp_path, software=software_tree(xp=True), system=system_tree(arch="x86",
                   setup={"SystemSetupInProgress": 1}), files=("Sysprep/sysprep.inf",))
    image = describe_windows(root)
    assert (image.version, image.major, image.minor, image.build) == ("5.1.2600", 5, 1, 2600)
    assert image.pre_vista and image.generalized and image.arch == "x86"
    assert image.answer_files == ("Sysprep/sysprep.inf",)


def test_answer_files_found_in_search_order(tmp_path: Path) -> None:
    root = windows(tmp_path, system=system_tree(setup={"UnattendFile": r"D:\build\unattend.xml"}),
                   software=software_tree(image_state="IMAGE_STATE_COMPLETE"),
                   files=("Windows/Panther/unattend.xml", "Windows/Panther/UNATTEND/Autounattend.xml",
                          "Windows/System32/Sysprep/Unattend.xml"))
    image = describe_windows(root)
    assert not image.generalized and image.image_state == "IMAGE_STATE_COMPLETE"
    assert image.unattend_file == r"D:\build\unattend.xml"
    assert image.answer_files == ("Windows/Panther/UNATTEND/Autounattend.xml", "Windows/Panther/unattend.xml",
                                  "Windows/System32/Sysprep/Unattend.xml")


def test_no_windows_is_an_image_error(tmp_path: Path) -> None:
    windows_tree(tmp_path, system=system_tree())
    with pytest.raises(ImageError, match="no Windows/System32/config/SOFTWARE"):
        describe_windows(tmp_path)


# place_windows: Vista and later --------------------------------------------------------------------------------


def test_place_writes_the_answer_file_script_and_record(tmp_path: Path) -> None:
    root = windows(tmp_path)
    lines = place_windows(root, describe_windows(root), STATE, complete_script=SCRIPT, record=RECORD)
    assert (root / "Windows/Panther/unattend.xml").read_bytes() == unattend_xml(STATE, "amd64")
    assert (root / "ProgramData/peagent/deployment.json").read_bytes() == RECORD
    ps1 = (root / "ProgramData/peagent/firstboot.ps1").read_bytes()
    assert ps1.startswith(b"\xef\xbb\xbf") and b"\r\n" in ps1 and b"\n" not in ps1.replace(b"\r\n", b"")
    assert ps1.decode("utf-8-sig").replace("\r\n", "\n") == SCRIPT
    assert (root / "Windows/Setup/Scripts/SetupComplete.cmd").read_bytes() == setup_complete_cmd().encode()
    assert lines == [
        "answer file written to Windows/Panther/unattend.xml (amd64)",
        "first-boot report script written to ProgramData/peagent/firstboot.ps1 (it deletes itself when run)",
        "Windows/Setup/Scripts/SetupComplete.cmd written: runs the report, then deletes the answer files (not run "
        "by Windows on images activated with an OEM key)",
        "deployment record written to ProgramData/peagent/deployment.json",
    ]
    assert not any(secret in line for line in lines for secret in SECRETS)


def test_setup_complete_runs_the_report_then_deletes_the_secrets() -> None:
    cmd = setup_complete_cmd()
    assert cmd.endswith("\r\n") and "\n" not in cmd.replace("\r\n", "")
    steps = ("SetupComplete-image.cmd", "firstboot.ps1", r'del /f /q "%WINDIR%\Panther\unattend.xml"',
             r'rd /s /q "%WINDIR%\Panther\Unattend"', r'del /f /q "%WINDIR%\System32\Sysprep\unattend.xml"')
    order = [cmd.index(step) for step in steps]
    assert order == sorted(order)
    assert 'powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "%ProgramData%\\peagent\\' \
           'firstboot.ps1"' in cmd


def test_answer_files_that_outrank_ours_are_neutralised(tmp_path: Path) -> None:
    root = windows(tmp_path, system=system_tree(setup={"UnattendFile": r"D:\build\unattend.xml", "SetupType": 0}),
                   files=("Windows/Panther/Unattend/Unattend.xml", "Windows/Panther/unattend.xml",
                          "Windows/System32/Sysprep/unattend.xml"))
    lines = place_windows(root, describe_windows(root), STATE, complete_script=SCRIPT, record=RECORD)
    assert not (root / "Windows/Panther/Unattend/Unattend.xml").exists()
    assert (root / "Windows/Panther/Unattend/Unattend.xml.peagent-disabled").read_bytes().startswith(b"<image's own")
    assert (root / "Windows/Panther/unattend.xml").read_bytes() == unattend_xml(STATE, "amd64")
    assert (root / "Windows/System32/Sysprep/unattend.xml").exists()  # below ours: SetupComplete.cmd deletes it
    h = hivex.Hivex(str(root / "Windows/System32/config/SYSTEM"))
    setup = h.node_get_child(h.root(), "Setup")
    values = {h.value_key(v): h.value_value(v) for v in h.node_values(setup)}
    assert values["UnattendFile"] == (REG_SZ, (UNATTEND_FILE_VALUE + "\0").encode("utf-16-le"))
    assert values["SetupType"][0] == 4  # the other values of the key are kept
    assert "answer file written to Windows/Panther/unattend.xml (amd64; it replaces the image's own)" in lines
    assert ("Windows/Panther/Unattend/Unattend.xml would outrank the new answer file: renamed to "
            "Unattend.xml.peagent-disabled") in lines
    assert rf"SYSTEM Setup\UnattendFile named D:\build\unattend.xml: now {UNATTEND_FILE_VALUE}" in lines


def test_the_images_setup_complete_is_kept_and_called_first(tmp_path: Path) -> None:
    root = windows(tmp_path, files=("Windows/Setup/Scripts/setupcomplete.cmd",))
    lines = place_windows(root, describe_windows(root), STATE, complete_script=SCRIPT, record=RECORD)
    assert (root / "Windows/Setup/Scripts/SetupComplete-image.cmd").read_bytes().startswith(b"<image's own")
    assert sorted(os.listdir(root / "Windows/Setup/Scripts")) == ["SetupComplete-image.cmd", "SetupComplete.cmd"]
    assert (root / "Windows/Setup/Scripts/SetupComplete.cmd").read_bytes() == setup_complete_cmd().encode()
    assert ("the image's Windows/Setup/Scripts/SetupComplete.cmd kept as SetupComplete-image.cmd; it runs first"
            in lines)
    # placing again (a rerun) keeps the image's script, not ours in its place
    place_windows(root, describe_windows(root), STATE, complete_script=SCRIPT, record=RECORD)
    assert (root / "Windows/Setup/Scripts/SetupComplete-image.cmd").read_bytes().startswith(b"<image's own")


def test_a_not_generalized_image_is_warned_about(tmp_path: Path) -> None:
    root = windows(tmp_path, software=software_tree(image_state="IMAGE_STATE_COMPLETE"))
    lines = place_windows(root, describe_windows(root), STATE, complete_script=SCRIPT, record=RECORD)
    assert any(line.startswith("warning: the image is not generalized (ImageState IMAGE_STATE_COMPLETE)")
               for line in lines)


def test_windows_7_gets_its_oobe_settings(tmp_path: Path) -> None:
    software = software_tree()
    version = software["Microsoft"]["Windows NT"]["CurrentVersion"]
    for name in ("CurrentMajorVersionNumber", "CurrentMinorVersionNumber"):
        del version[name]
    version.update({"CurrentVersion": "6.1", "CurrentBuild": "7601"})
    root = windows(tmp_path, software=software)
    image = describe_windows(root)
    assert image.version == "6.1.7601" and not image.pre_vista
    place_windows(root, image, STATE, complete_script=SCRIPT, record=RECORD)
    assert (root / "Windows/Panther/unattend.xml").read_bytes() == unattend_xml(STATE, "amd64", oobe=OOBE_WINDOWS_7)


def test_nothing_is_written_through_a_symlink(tmp_path: Path) -> None:
    root = windows(tmp_path / "win")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "ProgramData").rmdir()
    os.symlink(outside, root / "ProgramData")
    with pytest.raises(FilesystemError, match="ProgramData"):
        place_windows(root, describe_windows(root), STATE, complete_script=SCRIPT, record=RECORD)
    assert os.listdir(outside) == []


# place_windows: before Vista -----------------------------------------------------------------------------------


def test_place_windows_xp(tmp_path: Path) -> None:
    root = windows(tmp_path, software=software_tree(xp=True), system=system_tree(arch="x86"),
                   files=("SYSPREP/sysprep.exe",))
    state = STATE.but(interfaces=())  # sysprep.inf takes no static addresses
    lines = place_windows(root, describe_windows(root), state, complete_script=SCRIPT, record=RECORD)
    command = r'cmd /c "%SystemDrive%\ProgramData\peagent\firstboot.cmd"'
    assert (root / "SYSPREP/sysprep.inf").read_bytes() == sysprep_inf(state, run_once=(command,))
    cmd = (root / "ProgramData/peagent/firstboot.cmd").read_text()
    assert r'del /f /q "%SystemDrive%\Sysprep\sysprep.inf"' in cmd
    assert not (root / "ProgramData/peagent/firstboot.ps1").exists()  # no PowerShell, and it would hold the token
    assert not (root / "Windows/Panther/unattend.xml").exists()
    assert (root / "ProgramData/peagent/deployment.json").read_bytes() == RECORD
    assert lines[0] == "answer file written to Sysprep/sysprep.inf"
    assert not any(secret in line for line in lines for secret in SECRETS)


# firstboot_powershell (pure) -----------------------------------------------------------------------------------


def test_firstboot_script_posts_the_json_event() -> None:
    assert "$url = 'https://dp.example.com/status/d-42'" in SCRIPT and "$token = 'tok-3f9a'" in SCRIPT
    assert "$headers['Authorization'] = 'Bearer ' + $token" in SCRIPT
    assert "-Method Post -Body $body -ContentType 'application/json'" in SCRIPT
    for part in ('$report.message = "first boot of $hostname complete"', "$report.machine.hostname = $hostname",
                 "$report.machine.macs = $macs", "$report.machine.uuid = $uuid.ToLower()",
                 "$report.machine.serial = Get-Wmi 'Win32_BIOS' 'SerialNumber'",
                 "$report.machine.vendor = Get-Wmi 'Win32_ComputerSystem' 'Manufacturer'",
                 "$report.machine.model = Get-Wmi 'Win32_ComputerSystem' 'Model'", "$report.time = [int64]",
                 "ConvertTo-Json -InputObject $report -Depth 5", "$try -le 5", "firstboot.log",
                 "Remove-Item -LiteralPath $PSCommandPath"):
        assert part in SCRIPT, part


def template(script: str) -> dict:
    """The event the script starts from: the JSON in its single-quoted ConvertFrom-Json literal."""
    found = re.search(r"\$report = ConvertFrom-Json '((?:[^']|'')*)'", script)
    assert found, "no ConvertFrom-Json template"
    return json.loads(found.group(1).replace("''", "'"))


def test_the_complete_event_validates_once_the_script_fills_it_in() -> None:
    event = template(SCRIPT)
    assert event == complete_event("d-42")
    assert (event["id"], event["deployment_id"], event["seq"], event["source"], event["phase"]) == (
        "d-42:complete", "d-42", 1, "firstboot", "complete")
    # What the script sets, as PowerShell would: every property it assigns is in the template already.
    for prop in re.findall(r"\$report\.([a-z_.]+) =", SCRIPT):
        node = event
        *parents, last = prop.split(".")
        for name in parents:
            node = node[name]
        assert last in node, prop
    event["message"] = "first boot of WS-42 complete"
    event["machine"].update(hostname="WS-42", macs=["52:54:00:12:34:56"], uuid="4c4c4544-0042-3010-8048-b4c04f4e3232",
                            serial="S1", vendor="LENOVO", model="ThinkPad T14")
    event["time"] = 1_700_000_000
    assert validate_event(event) == event
    event["machine"].update(uuid=None, serial=None, vendor=None, model=None, macs=[])  # WMI had nothing to say
    assert validate_event(event) == event


def test_firstboot_script_without_url_or_token_and_with_quotes() -> None:
    script = firstboot_powershell(None, "it's-42\nRemove-Item C:\\", None)
    assert "$url = $null" in script and "$token = $null" in script and "tok-" not in script
    # Whatever the id holds stays inside the single-quoted literal: quotes doubled, a line break kept inside.
    assert template(script)["deployment_id"] == "it's-42\nRemove-Item C:\\"
    assert "it''s-42" in script and "\nRemove-Item C:" not in script
    typographic = firstboot_powershell(None, "a\u2019b", None)  # PowerShell ends a literal at \u2019 too
    assert "\u2019" not in typographic and template(typographic)["deployment_id"] == "a\u2019b"
