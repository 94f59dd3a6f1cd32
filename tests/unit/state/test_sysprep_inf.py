from __future__ import annotations

import configparser

import pytest

from peagent.state.model import DomainJoin, Interface, MachineState, Secret
from peagent.state.sysprep_inf import TIMEZONE_INDEX, sysprep_inf, timezone_index
from peagent.state.timezones import WINDOWS_TO_IANA

RICH = MachineState(
    computer_name="WS-0042", organization="Société Exemple", owner="IT",
    product_key=Secret("XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"), admin_password=Secret('P@ss"w0rd; €'),
    timezone="Europe/Berlin",
    domain=DomainJoin("corp.example.com", "svc-join", Secret("JoinSecret"), "OU=Workstations,DC=corp,DC=example,DC=com"),
    interfaces=(Interface("52:54:00:ab:cd:ef"),),  # DHCP: fine
)

GOLDEN = (
    '[Unattended]\r\n'
    'OemSkipEula=Yes\r\n'
    'OemPreinstall=Yes\r\n'
    'OemPnPDriversPath=Drivers\\NIC;Drivers\\Storage\\AHCI\r\n'
    '\r\n'
    '[GuiUnattended]\r\n'
    'AdminPassword="P@ss""w0rd; €"\r\n'
    'EncryptedAdminPassword=No\r\n'
    'OEMSkipRegional=1\r\n'
    'OEMSkipWelcome=1\r\n'
    'TimeZone=110\r\n'
    '\r\n'
    '[UserData]\r\n'
    'ComputerName=WS-0042\r\n'
    'FullName="IT"\r\n'
    'OrgName="Société Exemple"\r\n'
    'ProductKey="XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"\r\n'
    '\r\n'
    '[Identification]\r\n'
    'JoinDomain=corp.example.com\r\n'
    'DomainAdmin=svc-join\r\n'
    'DomainAdminPassword="JoinSecret"\r\n'
    'MachineObjectOU="OU=Workstations,DC=corp,DC=example,DC=com"\r\n'
    '\r\n'
    '[Networking]\r\n'
    'InstallDefaultComponents=Yes\r\n'
    '\r\n'
    '[GuiRunOnce]\r\n'
    'Command0="%SystemDrive%\\Sysprep\\firstboot.cmd"\r\n'
    'Command1="cmd /c del %SystemDrive%\\Sysprep\\sysprep.inf"\r\n'
)


def render(state: MachineState = RICH, **kwargs) -> bytes:
    defaults = {"driver_paths": ["C:\\Drivers\\NIC", "/Drivers/Storage/AHCI/"],
                "run_once": ["%SystemDrive%\\Sysprep\\firstboot.cmd", "cmd /c del %SystemDrive%\\Sysprep\\sysprep.inf"]}
    return sysprep_inf(state, **{**defaults, **kwargs})


def parse(data: bytes) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep the keys' case
    parser.read_string(data.decode("cp1252"))
    return parser


def test_rich_state_golden_text_in_cp1252_with_crlf():
    data = render()
    assert data == GOLDEN.encode("cp1252")
    assert "é".encode("cp1252") in data and "€".encode("cp1252") == b"\x80" and b"\x80" in data
    assert data.count(b"\r\n") == data.count(b"\n")  # every line end is CRLF


def test_parses_as_ini():
    parser = parse(render())
    assert parser.sections() == ["Unattended", "GuiUnattended", "UserData", "Identification", "Networking",
                                 "GuiRunOnce"]
    assert parser["GuiUnattended"]["TimeZone"] == "110"
    assert parser["UserData"]["ComputerName"] == "WS-0042"
    assert parser["Identification"]["MachineObjectOU"] == '"OU=Workstations,DC=corp,DC=example,DC=com"'
    assert "Sysprep" not in parser and "SysprepMassStorage" not in parser


def test_minimal_state():
    data = sysprep_inf(MachineState())
    assert data == (b"[Unattended]\r\nOemSkipEula=Yes\r\n\r\n[GuiUnattended]\r\nOEMSkipRegional=1\r\nOEMSkipWelcome=1\r\n"
                    b"\r\n[Networking]\r\nInstallDefaultComponents=Yes\r\n")


def test_workgroup():
    parser = parse(sysprep_inf(MachineState(workgroup="LAB")))
    assert dict(parser["Identification"]) == {"JoinWorkgroup": "LAB"}


def test_unencodable_value_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"\[UserData\] OrgName: expected characters Windows-1252 can hold .*"
                                         r"found '株' at position 1"):
        sysprep_inf(MachineState(organization="株式会社"))


def test_unencodable_secret_is_refused_without_showing_it():
    with pytest.raises(ValueError, match=r"\[GuiUnattended\] AdminPassword: .*found a character it cannot hold") as caught:
        sysprep_inf(MachineState(admin_password=Secret("pass密码")))
    assert "密" not in str(caught.value) and "pass" not in str(caught.value)


def test_line_break_in_a_value_is_refused():
    with pytest.raises(ValueError, match=r"\[GuiRunOnce\] Command0: expected a single line"):
        sysprep_inf(MachineState(), run_once=["a\r\nb"])


def test_static_addresses_are_refused():
    state = MachineState(interfaces=(Interface("52:54:00:12:34:56", dhcp=False, addresses=("10.0.0.5/8",)),))
    with pytest.raises(ValueError, match="interfaces 52:54:00:12:34:56: static addresses are not supported for "
                                         "pre-Vista images"):
        sysprep_inf(state)


def test_unknown_zone_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"found 'America/Mexico_City' \(Windows: Central Standard Time \(Mexico\)\)"):
        sysprep_inf(MachineState(timezone="America/Mexico_City"))
    with pytest.raises(ValueError, match="found 'Mars/Olympus_Mons', which has no index"):
        sysprep_inf(MachineState(timezone="Mars/Olympus_Mons"))


@pytest.mark.parametrize(("zone", "index"), [
    ("W. Europe Standard Time", 110), ("Eastern Standard Time", 35), ("GMT Standard Time", 85),
    ("Pacific Standard Time", 4), ("Dateline Standard Time", 0), ("Tonga Standard Time", 300),
    ("America/Phoenix", 15), ("Asia/Kolkata", 190), ("Australia/Sydney", 255), ("mexico standard time 2", 13),
])
def test_timezone_index(zone, index):
    assert timezone_index(zone) == index


def test_index_table_names_are_windows_zone_names():
    legacy = {"Mexico Standard Time", "Mexico Standard Time 2", "Mid-Atlantic Standard Time", "Fiji Islands Standard Time"}
    assert {name for name in TIMEZONE_INDEX if name not in WINDOWS_TO_IANA} == legacy
    assert len(TIMEZONE_INDEX) == 75 and len(set(TIMEZONE_INDEX.values())) == 75


@pytest.mark.parametrize("path", ["", "C:\\", "Drivers;Other", "%WINDIR%\\Drivers"])
def test_bad_driver_path_is_refused(path):
    with pytest.raises(ValueError, match=r"\[Unattended\] OemPnPDriversPath: expected folders relative"):
        sysprep_inf(MachineState(), driver_paths=[path])


def test_driver_path_length_limit():
    with pytest.raises(ValueError, match="expected at most 4096 characters, found 4099"):
        sysprep_inf(MachineState(), driver_paths=["D" * 2049, "E" * 2049])


def test_admin_password_length_limit_without_showing_it():
    with pytest.raises(ValueError, match="AdminPassword: expected at most 127 characters, found 128") as caught:
        sysprep_inf(MachineState(admin_password=Secret("s" * 128)))
    assert "sss" not in str(caught.value)
