"""Give a freshly written Windows its state: the answer file, the first-boot report, the record.

The new OS is an NTFS tree the integrator mounted read-write (ntfs-3g). :func:`describe_windows`
reads what decides how to write (from the hives, peagent.state.hive):

* the processor architecture the answer file's components must name: SYSTEM ``<ControlSet>\\
  Control\\Session Manager\\Environment`` PROCESSOR_ARCHITECTURE, else the tree (``SysArm32`` or
  ``SysCHPE``: arm64; ``SysWOW64``: amd64; neither: x86);
* the version (SOFTWARE ``CurrentMajorVersionNumber``/``CurrentMinorVersionNumber`` on 10 and
  later, whose ``CurrentVersion`` stays "6.3"; ``CurrentVersion`` before; ``CurrentBuild``):
  before Vista (5.x) the answer file is sysprep.inf, from Vista on unattend.xml;
* whether it was generalized: SOFTWARE ``Microsoft\\Windows\\CurrentVersion\\Setup\\State``
  ImageState ``IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE`` (or ``..._TO_AUDIT``). Only a generalized
  image runs the specialize pass, where the name, key, domain and network are set. Before Vista,
  SYSTEM ``Setup\\SystemSetupInProgress`` = 1 is taken as "sealed" (what ``sysprep -reseal``
  leaves; not checked against Microsoft's documentation);
* the answer files already there, which Windows searches in a fixed order at every pass
  (research notes section 1): SYSTEM ``Setup\\UnattendFile``, ``Windows\\Panther\\Unattend\\``
  (Unattend.xml, Autounattend.xml), ``Windows\\Panther\\``, ``Windows\\System32\\Sysprep\\``.

:func:`place_windows` (Vista and later) writes the answer file where Microsoft documents
replacing it in an offline image, ``Windows\\Panther\\unattend.xml``, renames the files that
would outrank it (``*.peagent-disabled``), and points ``Setup\\UnattendFile``, when the image sets
it, at ours (``C:\\Windows\\Panther\\unattend.xml``: a deployed Windows boots as C:). It writes
``Windows\\Setup\\Scripts\\SetupComplete.cmd``, which Windows runs once as SYSTEM after setup,
before the logon screen: it calls the image's own SetupComplete.cmd (kept, renamed), runs the
first-boot report ``ProgramData\\peagent\\firstboot.ps1`` (:func:`firstboot_powershell`), then
deletes the answer files, which hold the secrets. Windows does not run SetupComplete.cmd on an
image activated with an OEM product key (except Enterprise and Server editions): there the
report is not sent, and the answer files stay until removed (Windows masks the passwords in the
cached copy, not the domain-join one).

Before Vista, sysprep.inf goes to ``Sysprep\\sysprep.inf`` and its ``[GuiRunOnce]`` runs
``ProgramData\\peagent\\firstboot.cmd`` at the first logon (of whoever logs on first): it logs and
deletes sysprep.inf. Windows XP has no PowerShell and no TLS 1.2 client worth the name, so no
report is sent; the PowerShell script is not written there (it holds the token).

The deployment record goes to ``ProgramData\\peagent\\deployment.json`` (peagent.state.record).
Every path is matched without regard to case and never through a symlink (ntfs-3g shows
junctions as symlinks), and the report lines name files, never their content.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peagent.errors import FilesystemError, ImageError
from peagent.state.hive import Hive, fold, open_hive, windows_path
from peagent.state.model import MachineState, Secret
from peagent.state.sysprep_inf import sysprep_inf
from peagent.state.unattend import OOBE_WINDOWS_7, OOBE_WINDOWS_8_PLUS, unattend_xml
from peagent.status.event import Event

CONFIG = "Windows/System32/config"
ARCHES = {"amd64": "amd64", "x86": "x86", "arm64": "arm64"}
GENERALIZED = ("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE", "IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT")
OUR_ANSWER_FILE = "Windows/Panther/unattend.xml"
OUTRANKING = ("Windows/Panther/Unattend/Unattend.xml", "Windows/Panther/Unattend/Autounattend.xml",
              "Windows/Panther/Autounattend.xml")
ANSWER_FILES = (*OUTRANKING[:2], OUR_ANSWER_FILE, OUTRANKING[2], "Windows/System32/Sysprep/unattend.xml",
                "Sysprep/sysprep.inf")
SETUP_COMPLETE = "Windows/Setup/Scripts/SetupComplete.cmd"
IMAGE_SETUP_COMPLETE = "SetupComplete-image.cmd"
PEAGENT_DIR = "ProgramData/peagent"
MARKER = "rem peagent: first-boot completion"
UNATTEND_FILE_VALUE = r"C:\Windows\Panther\unattend.xml"


@dataclass(frozen=True)
class WindowsImage:
    arch: str  # amd64, x86, arm64: unattend.xml's processorArchitecture
    version: str  # "10.0.19045", "6.1.7601", "5.1.2600"
    major: int
    minor: int
    build: int | None
    product: str | None  # ProductName: "Windows 10 Pro"
    pre_vista: bool
    generalized: bool
    image_state: str | None
    answer_files: tuple[str, ...] = ()  # tree paths as they exist, in Windows' search order
    unattend_file: str | None = None  # SYSTEM Setup\UnattendFile, when set


def describe_windows(root: Path) -> WindowsImage:
    """What the Windows at ``root`` is; ImageError when the tree holds no readable Windows."""
    hives = {}
    for name in ("SYSTEM", "SOFTWARE"):
        path = windows_path(root, f"{CONFIG}/{name}")
        if path is None:
            raise ImageError(f"the new OS at {root} has no {CONFIG}/{name}: expected an installed Windows; the "
                             "image is not a Windows system volume (or the wrong partition was chosen)")
        hives[name] = open_hive(path)
    system, software = hives["SYSTEM"], hives["SOFTWARE"]
    cv = r"Microsoft\Windows NT\CurrentVersion"
    major, minor = software.dword(cv, "CurrentMajorVersionNumber"), software.dword(cv, "CurrentMinorVersionNumber")
    if major is None:
        text = software.string(cv, "CurrentVersion") or ""
        m = re.fullmatch(r"(\d+)\.(\d+)", text.strip())
        if m is None:
            raise ImageError(f"{software.path}: expected a CurrentVersion like 6.1, found {text!r}")
        major, minor = int(m[1]), int(m[2])
    build_text = software.string(cv, "CurrentBuild") or software.string(cv, "CurrentBuildNumber") or ""
    build = int(build_text) if build_text.isdigit() else None
    pre_vista = major < 6
    image_state = software.string(r"Microsoft\Windows\CurrentVersion\Setup\State", "ImageState")
    generalized = image_state in GENERALIZED if not pre_vista else system.dword("Setup", "SystemSetupInProgress") == 1
    found = tuple(str(p.relative_to(root)) for rel in ANSWER_FILES if (p := windows_path(root, rel)) is not None)
    version = ".".join(str(n) for n in (major, minor, build) if n is not None)
    return WindowsImage(arch=_arch(root, system), version=version, major=major, minor=minor or 0, build=build,
                        product=software.string(cv, "ProductName"), pre_vista=pre_vista, generalized=generalized,
                        image_state=image_state, answer_files=found,
                        unattend_file=system.string("Setup", "UnattendFile"))


def _arch(root: Path, system: Hive) -> str:
    cs = system.control_set()
    named = system.string(rf"{cs}\Control\Session Manager\Environment", "PROCESSOR_ARCHITECTURE") if cs else None
    if named is not None:
        if named.lower() not in ARCHES:
            raise ImageError(f"{system.path}: PROCESSOR_ARCHITECTURE is {named}; peagent writes answer files for "
                             "AMD64, x86 and ARM64 only")
        return ARCHES[named.lower()]
    if any(windows_path(root, f"Windows/{d}", want="dir") for d in ("SysArm32", "SysCHPE")):
        return "arm64"
    return "amd64" if windows_path(root, "Windows/SysWOW64", want="dir") else "x86"


def place_windows(root: Path, image: WindowsImage, state: MachineState, *, complete_script: str,
                  record: bytes) -> list[str]:
    """Write state, first-boot completion and record into the Windows at ``root``; the report lines."""
    lines: list[str] = []
    if image.pre_vista:
        _place_sysprep_inf(root, state, lines)
    else:
        _place_unattend(root, image, state, complete_script, lines)
    _write(root, f"{PEAGENT_DIR}/deployment.json", record)
    lines.append(f"deployment record written to {PEAGENT_DIR}/deployment.json")
    return lines


def _place_unattend(root: Path, image: WindowsImage, state: MachineState, script: str, lines: list[str]) -> None:
    oobe = OOBE_WINDOWS_7 if (image.major, image.minor) < (6, 2) else OOBE_WINDOWS_8_PLUS
    # The task's first-boot commands run in specialize, as SYSTEM, before anyone logs on.
    answer = unattend_xml(state, image.arch, oobe=oobe, setup_commands=state.first_boot_commands)
    replaced = windows_path(root, OUR_ANSWER_FILE) is not None
    _write(root, OUR_ANSWER_FILE, answer)
    lines.append(f"answer file written to {OUR_ANSWER_FILE} ({image.arch}"
                 + ("; it replaces the image's own)" if replaced else ")"))
    for rel in OUTRANKING:
        path = windows_path(root, rel)
        if path is not None:
            _rename(path, path.name + ".peagent-disabled")
            lines.append(f"{path.relative_to(root)} would outrank the new answer file: renamed to "
                         f"{path.name}.peagent-disabled")
    if image.unattend_file:
        system_path = windows_path(root, f"{CONFIG}/SYSTEM")
        assert system_path is not None  # describe_windows found it
        system = open_hive(system_path, write=True)
        system.set_string("Setup", "UnattendFile", UNATTEND_FILE_VALUE)
        system.commit()
        lines.append(f"SYSTEM Setup\\UnattendFile named {image.unattend_file}: now {UNATTEND_FILE_VALUE}")
    if not image.generalized:
        lines.append(f"warning: the image is not generalized (ImageState {image.image_state or 'unset'}): Windows "
                     "will not run the specialize pass, so the computer name, product key, domain and network in "
                     "the answer file are not applied; capture the image after sysprep /generalize /oobe")
    elif image.image_state == GENERALIZED[1]:
        lines.append("note: the image reseals to audit mode: the oobeSystem settings wait until it leaves it")
    _write(root, f"{PEAGENT_DIR}/firstboot.ps1", script.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8-sig"))
    lines.append(f"first-boot report script written to {PEAGENT_DIR}/firstboot.ps1 (it deletes itself when run)")
    existing = windows_path(root, SETUP_COMPLETE)
    if existing is not None and not _ours(existing):
        _rename(existing, IMAGE_SETUP_COMPLETE)
        lines.append(f"the image's {SETUP_COMPLETE} kept as {IMAGE_SETUP_COMPLETE}; it runs first")
    _write(root, SETUP_COMPLETE, setup_complete_cmd().encode("ascii"))
    lines.append(f"{SETUP_COMPLETE} written: runs the report, then deletes the answer files (not run by Windows "
                 "on images activated with an OEM key)")


def _ours(path: Path) -> bool:
    with open(path, "rb") as f:
        return MARKER.encode() in f.read(4096)


def setup_complete_cmd() -> str:
    """SetupComplete.cmd: the image's own first, then the report, then the secrets' removal."""
    own = rf"%WINDIR%\Setup\Scripts\{IMAGE_SETUP_COMPLETE}"
    script = r"%ProgramData%\peagent\firstboot.ps1"
    lines = [
        "@echo off",
        MARKER,
        f'if exist "{own}" call "{own}"',
        f'if exist "{script}" powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "{script}"',
        "rem the answer files hold the secrets the first boot needed: gone now",
        r'del /f /q "%WINDIR%\Panther\unattend.xml"',
        r'if exist "%WINDIR%\Panther\Unattend" rd /s /q "%WINDIR%\Panther\Unattend"',
        r'del /f /q "%WINDIR%\System32\Sysprep\unattend.xml"',
        "exit /b 0",
    ]
    return "\r\n".join(lines) + "\r\n"


def _place_sysprep_inf(root: Path, state: MachineState, lines: list[str]) -> None:
    command = r'cmd /c "%SystemDrive%\ProgramData\peagent\firstboot.cmd"'
    inf = sysprep_inf(state, run_once=(command,))
    if windows_path(root, "Sysprep/sysprep.exe") is None:
        lines.append("warning: there is no Sysprep/sysprep.exe: an image not sealed with sysprep -reseal -mini "
                     "ignores sysprep.inf")
    replaced = windows_path(root, "Sysprep/sysprep.inf") is not None
    _write(root, "Sysprep/sysprep.inf", inf)
    lines.append("answer file written to Sysprep/sysprep.inf" + (" (it replaces the image's own)" if replaced else ""))
    cmd = "\r\n".join([
        "@echo off", MARKER,
        r'echo %DATE% %TIME% first boot of %COMPUTERNAME% complete>> "%SystemDrive%\ProgramData\peagent\firstboot.log"',
        r'if exist "%SystemDrive%\Sysprep\sysprep.inf" del /f /q "%SystemDrive%\Sysprep\sysprep.inf"', ""])
    _write(root, f"{PEAGENT_DIR}/firstboot.cmd", cmd.encode("ascii"))
    lines.append(f"{PEAGENT_DIR}/firstboot.cmd runs at the first logon ([GuiRunOnce]): it logs and deletes "
                 "sysprep.inf; before Vista no completion report is sent")


def complete_event(deployment_id: str) -> dict[str, Any]:
    """The first boot's "complete" event (schema 1, docs/status.md) as firstboot.ps1 starts from it: the script
    fills in the machine (hostname, macs, uuid, serial, vendor, model), the message and the time. Its ``id`` is
    the same on every try, so a post that arrived although its answer was lost counts once."""
    machine: dict[str, Any] = {"hostname": None, "macs": [], "uuid": None, "serial": None, "vendor": None,
                               "model": None}
    return Event(id=f"{deployment_id}:complete", deployment_id=deployment_id, seq=1, source="firstboot", time=0,
                 phase="complete", message="first boot complete", machine=machine).to_json()


def firstboot_powershell(status_url: str | None, deployment_id: str, token: Secret | None) -> str:
    """firstboot.ps1: report the completed first boot to ``status_url`` and delete itself.

    It POSTs the :func:`complete_event` with this machine's identity and the time filled in, as JSON
    (Invoke-RestMethod, so PowerShell 3: Windows 8 and later, or 7 with WMF 3+), with
    ``Authorization: Bearer <token>`` when given, up to 5 tries, logging to
    ProgramData\\peagent\\firstboot.log. The token and URL live only in this script, which removes
    itself whatever the outcome, so the token does not outlive the first boot.
    """
    url = _ps(status_url) if status_url else "$null"
    secret = _ps(token.reveal()) if token is not None else "$null"
    template = _ps(json.dumps(complete_event(deployment_id), separators=(",", ":")))
    # Values go into single-quoted literals only: a comment or a double-quoted string could be broken out of.
    return f"""# peagent first boot: report that this deployment is complete, then delete this file.
$ErrorActionPreference = 'Stop'
$dir = Join-Path $env:ProgramData 'peagent'
$log = Join-Path $dir 'firstboot.log'
function Write-Log([string]$text) {{ Add-Content -Path $log -Value ((Get-Date).ToString('s') + ' ' + $text) }}
function Get-Wmi([string]$class, [string]$property) {{
    try {{ $value = (Get-WmiObject $class | Select-Object -First 1).$property }} catch {{ $value = $null }}
    if ($value -ne $null) {{ $value = ([string]$value).Trim() }}
    if ($value) {{ return $value }} else {{ return $null }}
}}
$url = {url}
$token = {secret}
try {{
    $hostname = $env:COMPUTERNAME
    $macs = @(Get-WmiObject Win32_NetworkAdapter -Filter 'PhysicalAdapter=True' | Where-Object {{ $_.MACAddress }} |
        ForEach-Object {{ $_.MACAddress.ToLower().Replace('-', ':') }})
    $epoch = New-Object DateTime 1970, 1, 1, 0, 0, 0, ([DateTimeKind]::Utc)
    $report = ConvertFrom-Json {template}
    $report.message = "first boot of $hostname complete"
    $report.machine.hostname = $hostname
    $report.machine.macs = $macs
    $uuid = Get-Wmi 'Win32_ComputerSystemProduct' 'UUID'
    if ($uuid -ne $null) {{ $report.machine.uuid = $uuid.ToLower() }}
    $report.machine.serial = Get-Wmi 'Win32_BIOS' 'SerialNumber'
    $report.machine.vendor = Get-Wmi 'Win32_ComputerSystem' 'Manufacturer'
    $report.machine.model = Get-Wmi 'Win32_ComputerSystem' 'Model'
    $report.time = [int64]([DateTime]::UtcNow - $epoch).TotalSeconds
    $body = ConvertTo-Json -InputObject $report -Depth 5 -Compress
    if ($url -eq $null) {{ Write-Log 'first boot complete; no status URL to report to' }}
    else {{
        [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor 3072  # TLS 1.2
        $headers = @{{}}
        if ($token -ne $null) {{ $headers['Authorization'] = 'Bearer ' + $token }}
        $sent = $false
        for ($try = 1; $try -le 5 -and -not $sent; $try++) {{
            try {{
                Invoke-RestMethod -Uri $url -Method Post -Body $body -ContentType 'application/json' `
                    -Headers $headers -UseBasicParsing | Out-Null
                $sent = $true
                Write-Log "first boot complete; reported (try $try)"
            }} catch {{
                Write-Log "report try $try failed: $($_.Exception.Message)"
                Start-Sleep -Seconds (15 * $try)
            }}
        }}
        if (-not $sent) {{ Write-Log 'first boot complete; the report could not be sent' }}
    }}
}} catch {{
    Write-Log "first boot report failed: $($_.Exception.Message)"
}} finally {{
    Remove-Item -LiteralPath $PSCommandPath -Force -ErrorAction SilentlyContinue
}}
"""


def _ps(text: str) -> str:
    """A PowerShell single-quoted string literal (PowerShell also takes the typographic single quotes)."""
    return "'" + re.sub("(['\u2018\u2019\u201a\u201b])", r"\1\1", text) + "'"


def _write(root: Path, rel: str, data: bytes) -> Path:
    """Write ``rel`` under ``root``, reusing names that exist in any case, creating folders, never through a symlink."""
    *dirs, name = [p for p in rel.split("/") if p]
    here = root
    try:
        for part in dirs:
            here = _entry(here, part)
            if not os.path.lexists(here):
                here.mkdir()
            elif not stat.S_ISDIR(os.lstat(here).st_mode):
                raise FilesystemError(f"{here}: expected a folder (not a symlink or a file) to write {rel} into")
        target = _entry(here, name)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise FilesystemError(f"cannot write {rel} in {root}: {exc}") from exc
    return target


def _rename(path: Path, name: str) -> None:
    try:
        path.rename(path.with_name(name))
    except OSError as exc:
        raise FilesystemError(f"cannot rename {path} to {name}: {exc}") from exc


def _entry(folder: Path, name: str) -> Path:
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return folder / name
    matches = [n for n in entries if n == name] or sorted(n for n in entries if fold(n) == fold(name))
    return folder / (matches[0] if matches else name)
