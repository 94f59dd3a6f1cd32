"""sysprep.inf: what a generalized Windows 2000, XP or Server 2003 is told on its first boot.

Before Vista, ``sysprep -reseal -mini`` left an image that runs *Mini-Setup* on its next boot.
Mini-Setup reads ``%SystemDrive%\\Sysprep\\sysprep.inf`` (next to sysprep.exe and setupcl.exe),
an INI file in the INF dialect, and asks on screen for anything the file does not answer. The
sections written here (research notes, section 2; XP deploy.cab ref.chm; TechNet cc772783,
cc772792):

``[Unattended]``
    ``OemSkipEula=Yes``; with driver folders, ``OemPreinstall=Yes`` and ``OemPnPDriversPath``:
    ``;``-separated folders relative to ``%SystemDrive%`` (no drive, no variables, at most 4096
    characters), which Plug and Play searches during Mini-Setup.
``[GuiUnattended]``
    ``AdminPassword`` (quoted; at most 127 characters) with ``EncryptedAdminPassword=No``,
    ``OEMSkipRegional=1``, ``OEMSkipWelcome=1``, and ``TimeZone``: not a name but a number from
    Microsoft's index table (:data:`TIMEZONE_INDEX`).
``[UserData]``
    ``ComputerName``, ``FullName`` (RegisteredOwner), ``OrgName`` (RegisteredOrganization),
    ``ProductKey`` (quoted, with its hyphens).
``[Identification]``
    ``JoinDomain``, ``DomainAdmin``, ``DomainAdminPassword``, ``MachineObjectOU``; or
    ``JoinWorkgroup``. (The domain keys as in Microsoft's MED-V sysprep.inf example; not checked
    against ref.chm.)
``[Networking]``
    ``InstallDefaultComponents=Yes``: the default client, sharing and TCP/IP (DHCP) components, as
    Setup Manager writes it (not checked against ref.chm either).
``[GuiRunOnce]``
    ``Command0``, ``Command1``, ...: run once at the first logon.

Not written: ``[Sysprep] BuildMassStorageSection=Yes`` (fills the critical device database with
every storage driver Windows ships, slowing the first boot by minutes; the boot-critical driver is
the integrator's job), and static network settings: Mini-Setup's per-adapter ``[params.*]``
sections are not documented well enough to trust, so a state with static addresses is refused.

Free-text values are quoted, a ``"`` inside doubled, as the INF syntax asks: unquoted, a ``;``
would start a comment. Mini-Setup reads the file in the system's ANSI code page, which for the
Western editions is Windows-1252: the file is written in cp1252 with CRLF line ends, and a value
that cp1252 cannot hold is refused, naming its key, rather than turned into question marks.
"""

from __future__ import annotations

from collections.abc import Sequence

from peagent.state import timezones
from peagent.state.model import MachineState

MAX_ADMIN_PASSWORD = 127
MAX_DRIVERS_PATH = 4096
_SECRET_KEYS = {"AdminPassword", "DomainAdminPassword", "ProductKey"}  # never shown in an error

# Microsoft Time Zone Index Values (learn.microsoft.com/previous-versions/windows/embedded/ms912391,
# Windows XP Embedded; the same table as the Server 2003 [GuiUnattended] reference). Rows from 060
# on were read from two independent copies of it (the "unattended" project's timezones.php, a
# TimeZoneNumericMap in C#), which agree with each other and with Microsoft's first rows. Names are
# the registry key names, which is what windows_zone() returns: Microsoft's table dots some
# (S.A., U.S., A.U.S., S.E.). Zones whose key was renamed since XP keep their XP name here
# ("Mexico Standard Time", "Fiji Islands Standard Time"): which newer zone each became is not
# verified, so asking for the newer one is refused rather than guessed.
TIMEZONE_INDEX: dict[str, int] = {
    "Dateline Standard Time": 0, "Samoa Standard Time": 1, "Hawaiian Standard Time": 2,
    "Alaskan Standard Time": 3, "Pacific Standard Time": 4, "Mountain Standard Time": 10,
    "Mexico Standard Time 2": 13, "US Mountain Standard Time": 15, "Central Standard Time": 20,
    "Canada Central Standard Time": 25, "Mexico Standard Time": 30, "Central America Standard Time": 33,
    "Eastern Standard Time": 35, "US Eastern Standard Time": 40, "SA Pacific Standard Time": 45,
    "Atlantic Standard Time": 50, "SA Western Standard Time": 55, "Pacific SA Standard Time": 56,
    "Newfoundland Standard Time": 60, "E. South America Standard Time": 65, "SA Eastern Standard Time": 70,
    "Greenland Standard Time": 73, "Mid-Atlantic Standard Time": 75, "Azores Standard Time": 80,
    "Cape Verde Standard Time": 83, "GMT Standard Time": 85, "Greenwich Standard Time": 90,
    "Central Europe Standard Time": 95, "Central European Standard Time": 100, "Romance Standard Time": 105,
    "W. Europe Standard Time": 110, "W. Central Africa Standard Time": 113, "E. Europe Standard Time": 115,
    "Egypt Standard Time": 120, "FLE Standard Time": 125, "GTB Standard Time": 130,
    "Israel Standard Time": 135, "South Africa Standard Time": 140, "Russian Standard Time": 145,
    "Arab Standard Time": 150, "E. Africa Standard Time": 155, "Arabic Standard Time": 158,
    "Iran Standard Time": 160, "Arabian Standard Time": 165, "Caucasus Standard Time": 170,
    "Afghanistan Standard Time": 175, "Ekaterinburg Standard Time": 180, "West Asia Standard Time": 185,
    "India Standard Time": 190, "Nepal Standard Time": 193, "Central Asia Standard Time": 195,
    "Sri Lanka Standard Time": 200, "N. Central Asia Standard Time": 201, "Myanmar Standard Time": 203,
    "SE Asia Standard Time": 205, "North Asia Standard Time": 207, "China Standard Time": 210,
    "Singapore Standard Time": 215, "Taipei Standard Time": 220, "W. Australia Standard Time": 225,
    "North Asia East Standard Time": 227, "Korea Standard Time": 230, "Tokyo Standard Time": 235,
    "Yakutsk Standard Time": 240, "AUS Central Standard Time": 245, "Cen. Australia Standard Time": 250,
    "AUS Eastern Standard Time": 255, "E. Australia Standard Time": 260, "Tasmania Standard Time": 265,
    "Vladivostok Standard Time": 270, "West Pacific Standard Time": 275, "Central Pacific Standard Time": 280,
    "Fiji Islands Standard Time": 285, "New Zealand Standard Time": 290, "Tonga Standard Time": 300,
}
_INDEX_BY_LOWER = {name.lower(): index for name, index in TIMEZONE_INDEX.items()}


def sysprep_inf(state: MachineState, *, driver_paths: Sequence[str] = (), run_once: Sequence[str] = ()) -> bytes:
    """The sysprep.inf for state, as cp1252 bytes with CRLF line ends.

    driver_paths are folders on the system drive (``Drivers\\NIC``; ``C:\\`` or ``/`` in front is
    dropped). Raises ValueError naming the key or zone: static addresses, a zone without an index,
    a value cp1252 cannot encode, a line break in a value, or a value longer than Windows accepts.
    """
    static = [i.mac or i.name or str(n) for n, i in enumerate(state.interfaces, 1) if i.addresses or not i.dhcp]
    if static:
        raise ValueError(f"interfaces {', '.join(static)}: static addresses are not supported for pre-Vista "
                         "images (sysprep.inf); use DHCP, or set them with a run_once command")
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    unattended = [("OemSkipEula", "Yes")]
    if driver_paths:
        unattended += [("OemPreinstall", "Yes"), ("OemPnPDriversPath", _drivers_path(driver_paths))]
    sections.append(("Unattended", unattended))

    gui: list[tuple[str, str]] = []
    if state.admin_password is not None:
        password = state.admin_password.reveal()
        if len(password) > MAX_ADMIN_PASSWORD:
            raise ValueError(f"[GuiUnattended] AdminPassword: expected at most {MAX_ADMIN_PASSWORD} characters, "
                             f"found {len(password)}")
        gui += [("AdminPassword", _quote(password)), ("EncryptedAdminPassword", "No")]
    gui += [("OEMSkipRegional", "1"), ("OEMSkipWelcome", "1")]
    if state.timezone:
        gui.append(("TimeZone", str(timezone_index(state.timezone))))
    sections.append(("GuiUnattended", gui))

    user = [("ComputerName", state.computer_name), ("FullName", _quote(state.owner)),
            ("OrgName", _quote(state.organization)),
            ("ProductKey", _quote(state.product_key.reveal() if state.product_key is not None else None))]
    sections.append(("UserData", [(key, value) for key, value in user if value]))

    if state.domain is not None:
        join = state.domain
        identification = [("JoinDomain", join.domain), ("DomainAdmin", join.username),
                          ("DomainAdminPassword", _quote(join.password.reveal() if join.password else None)),
                          ("MachineObjectOU", _quote(join.ou))]
        sections.append(("Identification", [(key, value) for key, value in identification if value]))
    elif state.workgroup:
        sections.append(("Identification", [("JoinWorkgroup", state.workgroup)]))

    sections.append(("Networking", [("InstallDefaultComponents", "Yes")]))
    if run_once:
        sections.append(("GuiRunOnce", [(f"Command{n}", _quote(command)) for n, command in enumerate(run_once)]))
    return _render(sections)


def timezone_index(name: str) -> int:
    """The [GuiUnattended] TimeZone number for a Windows (incl. XP-era) or IANA zone name; ValueError if none."""
    index = _INDEX_BY_LOWER.get(name.lower())
    if index is None:
        windows = timezones.windows_zone(name)
        index = _INDEX_BY_LOWER.get(windows.lower()) if windows else None
        if index is None:
            found = f"{name!r}" + (f" (Windows: {windows})" if windows and windows != name else "")
            raise ValueError(f"TimeZone: expected a zone in Microsoft's pre-Vista time zone index table, found "
                             f"{found}, which has no index; choose a zone of the same offset that has one")
    return index


def _drivers_path(paths: Sequence[str]) -> str:
    folders = []
    for path in paths:
        folder = path.replace("/", "\\")
        if len(folder) >= 2 and folder[1] == ":":
            folder = folder[2:]
        folder = folder.strip("\\")
        if not folder or ";" in folder or "%" in folder:
            raise ValueError(f"[Unattended] OemPnPDriversPath: expected folders relative to %SystemDrive% without "
                             f"';' or variables (Drivers\\NIC), found {path!r}")
        folders.append(folder)
    joined = ";".join(folders)
    if len(joined) > MAX_DRIVERS_PATH:
        raise ValueError(f"[Unattended] OemPnPDriversPath: expected at most {MAX_DRIVERS_PATH} characters, "
                         f"found {len(joined)}; use fewer or shorter folders")
    return joined


def _quote(value: str | None) -> str | None:
    return None if value is None else '"' + value.replace('"', '""') + '"'


def _render(sections: list[tuple[str, list[tuple[str, str]]]]) -> bytes:
    lines: list[str] = []
    for name, entries in sections:
        if not entries:
            continue
        lines += ([""] if lines else []) + [f"[{name}]"]
        for key, value in entries:
            where = f"[{name}] {key}"
            shown = "" if key in _SECRET_KEYS else f" in {value!r}"
            if "\r" in value or "\n" in value:
                raise ValueError(f"{where}: expected a single line, found a line break{shown}")
            try:
                value.encode("cp1252")
            except UnicodeEncodeError as error:
                bad = "a character it cannot hold" if key in _SECRET_KEYS else repr(value[error.start])
                raise ValueError(f"{where}: expected characters Windows-1252 can hold (XP reads sysprep.inf "
                                 f"as ANSI), found {bad} at position {error.start}") from None
            lines.append(f"{key}={value}")
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")
