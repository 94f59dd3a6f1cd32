"""What an in-place re-image deletes (plan_deletion), seen through a fake listdir: pure, no files."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from peagent.inplace.detect import MARKER
from peagent.inplace.policy import LINUX_KEEP, WINDOWS_DELETE, Deletion, plan_deletion

LINUX_ROOT = ["bin", "boot", "etc", "home", "lib", "lost+found", "opt", "root", "sbin", "srv", "tmp", "usr", "var"]
WINDOWS_ROOT = ["$Recycle.Bin", "$WINDOWS.~BT", "$WINDOWS.~WS", "$SysReset", "Boot", "bootmgr", "BOOTNXT", "BOOTSECT.BAK", "Data",
                "Documents and Settings", "hiberfil.sys", "pagefile.sys", "PerfLogs", "Program Files",
                "Program Files (x86)", "ProgramData", "Recovery", "swapfile.sys", "System Volume Information",
                "Users", "Windows", "Windows.old"]


def fake(tree: dict[str, list[str]]) -> tuple[Callable[[str], list[str]], list[str]]:
    """A listdir over ``tree`` that records what was listed; listing a directory not in it fails the test."""
    listed: list[str] = []

    def listdir(rel: str) -> list[str]:
        listed.append(rel)
        return list(tree[rel])

    return listdir, listed


def test_linux_keeps_home_srv_lost_found_and_the_keeps() -> None:
    listdir, listed = fake({"": [*LINUX_ROOT, "data"]})
    d = plan_deletion("linux", ["data"], listdir)
    assert d == Deletion(os_kind="linux",
                         delete=("bin", "boot", "etc", "lib", "opt", "root", "sbin", "tmp", "usr", "var"),
                         keep=("home", "srv", "lost+found", "data"))
    assert listed == [""]  # nothing deleted whole or kept whole is looked into
    assert d.render() == ["delete (linux policy): bin, boot, etc, lib, opt, root, sbin, tmp, usr, var",
                          "keep: home, srv, lost+found, data"]


def test_linux_names_are_case_sensitive() -> None:
    listdir, _ = fake({"": ["Home", "SRV", "home", "Data"]})
    assert plan_deletion("linux", ["data"], listdir).delete == ("Data", "Home", "SRV")


def test_a_nested_keep_empties_the_directories_on_its_way() -> None:
    listdir, listed = fake({"": LINUX_ROOT, "var": ["cache", "lib", "log"], "var/lib": ["apt", "dpkg", "pgsql"]})
    d = plan_deletion("linux", ["var/lib/pgsql"], listdir)
    assert d.delete == ("bin", "boot", "etc", "lib", "opt", "root", "sbin", "tmp", "usr",
                        "var/cache", "var/lib/apt", "var/lib/dpkg", "var/log")
    assert "var" not in d.delete and "var/lib" not in d.delete
    assert d.keep == (*LINUX_KEEP, "var/lib/pgsql")
    assert listed == ["", "var", "var/lib"]


def test_two_keeps_under_one_directory() -> None:
    listdir, _ = fake({"": ["opt", "usr"], "opt": ["data", "logs", "vendor"]})
    d = plan_deletion("linux", ["opt/data", "opt/logs"], listdir)
    assert d.delete == ("opt/vendor", "usr")


def test_a_keep_that_does_not_exist_is_harmless() -> None:
    listdir, listed = fake({"": ["etc", "home", "opt", "usr"], "opt": ["vendor"]})
    d = plan_deletion("linux", ["opt/data", "nowhere/at/all"], listdir)
    assert d.delete == ("etc", "opt/vendor", "usr")  # opt leads to the keep: emptied, not deleted
    assert d.keep == (*LINUX_KEEP, "opt/data", "nowhere/at/all")
    assert listed == ["", "opt"]


def test_a_keep_repeating_the_policy_is_listed_once() -> None:
    listdir, _ = fake({"": ["home", "usr"]})
    assert plan_deletion("linux", ["home", "srv"], listdir).keep == LINUX_KEEP


@pytest.mark.parametrize("kind", ["linux", "windows", "unknown", ""])
def test_the_marker_is_never_deleted(kind: str) -> None:
    listdir, _ = fake({"": [MARKER, "usr", "Windows"]})
    d = plan_deletion(kind, [], listdir)
    assert MARKER not in d.delete
    assert MARKER not in d.keep  # it is not the user's: reimage removes it last


def test_an_unknown_os_uses_the_linux_policy() -> None:
    listdir, _ = fake({"": ["backups", "home", "photos", "srv"]})
    d = plan_deletion("unknown", ["photos"], listdir)
    assert d == Deletion(os_kind="linux", delete=("backups",), keep=(*LINUX_KEEP, "photos"))


def test_windows_deletes_the_documented_list_and_keeps_the_rest() -> None:
    listdir, listed = fake({"": WINDOWS_ROOT})
    d = plan_deletion("windows", [], listdir)
    assert d.os_kind == "windows"
    assert sorted(d.delete) == sorted(WINDOWS_DELETE)
    assert {"Users", "$Recycle.Bin", "Windows.old", "Data", "System Volume Information"}.isdisjoint(d.delete)
    assert d.keep == ()
    assert listed == [""]


def test_windows_names_match_without_regard_to_case() -> None:
    listdir, _ = fake({"": ["WINDOWS", "program files (x86)", "PROGRAMDATA", "PageFile.SYS", "users", "windows.OLD",
                            "$windows.~bt"]})
    d = plan_deletion("windows", [], listdir)
    assert d.delete == ("$windows.~bt", "PROGRAMDATA", "PageFile.SYS", "WINDOWS", "program files (x86)")


def test_windows_keep_inside_program_data() -> None:
    listdir, listed = fake({"": ["ProgramData", "Users", "Windows"],
                            "ProgramData": ["Microsoft", "Package Cache", "Vendor"]})
    d = plan_deletion("windows", ["programdata/vendor"], listdir)
    assert d.delete == ("ProgramData/Microsoft", "ProgramData/Package Cache", "Windows")
    assert d.keep == ("programdata/vendor",)
    assert listed == ["", "ProgramData"]


def test_windows_keep_inside_what_stays_anyway_lists_nothing_more() -> None:
    listdir, listed = fake({"": ["Users", "Windows"]})
    d = plan_deletion("windows", ["Users/ann/Documents"], listdir)
    assert d.delete == ("Windows",)
    assert listed == [""]


def test_windows_keep_of_a_top_level_doomed_name() -> None:
    listdir, _ = fake({"": ["PerfLogs", "Recovery", "Windows"]})
    assert plan_deletion("windows", ["perflogs"], listdir).delete == ("Recovery", "Windows")
