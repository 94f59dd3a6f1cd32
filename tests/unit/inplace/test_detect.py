"""Which OS a tree holds (identify, on tmp trees: no mounts) and which partition to re-image (choose, pure)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from peagent.disk.layout.spec import Keep
from peagent.errors import InplaceError, UnknownOSError
from peagent.inplace.detect import MARKER, SMALL, FoundOS, Surveyed, choose, identify
from peagent.inplace.spec import InplaceSpec
from peagent.inventory import Partition

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'


def write(root: Path, rel: str, data: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# identify ------------------------------------------------------------------------------------------------------


def test_os_release_in_etc(tmp_path: Path) -> None:
    write(tmp_path, "etc/os-release", DEBIAN)
    write(tmp_path, "usr/lib/os-release", 'PRETTY_NAME="Something Else"\n')
    assert identify(tmp_path) == FoundOS(kind="linux", name="Debian GNU/Linux 12 (bookworm)",
                                         evidence="etc/os-release")


def test_os_release_only_in_usr_lib(tmp_path: Path) -> None:
    write(tmp_path, "usr/lib/os-release", 'PRETTY_NAME="Fedora Linux 40 (Workstation Edition)"\n')
    found = identify(tmp_path)
    assert found == FoundOS(kind="linux", name="Fedora Linux 40 (Workstation Edition)",
                            evidence="usr/lib/os-release")
    assert found.describe() == "Fedora Linux 40 (Workstation Edition) (usr/lib/os-release)"


def test_quoted_values_and_comments(tmp_path: Path) -> None:
    write(tmp_path, "etc/os-release", "# PRETTY_NAME=\"commented out\"\n"
                                      "   # another comment\n"
                                      "\n"
                                      "not a field\n"
                                      "ID=arch\n"
                                      "PRETTY_NAME='Arch \"rolling\" Linux'\n")
    assert identify(tmp_path).name == 'Arch "rolling" Linux'
    write(tmp_path, "etc/os-release", 'PRETTY_NAME="Ubuntu \\"Noble\\" 24.04"\n')
    assert identify(tmp_path).name == 'Ubuntu "Noble" 24.04'


@pytest.mark.parametrize(("text", "name"), [
    ('NAME="Rocky Linux"\nVERSION_ID="9.4"\n', "Rocky Linux 9.4"),
    ('NAME="Alpine Linux"\n', "Alpine Linux"),
    ("VERSION_ID=40\n", "Linux 40"),
    ('PRETTY_NAME=""\nNAME=Gentoo\n', "Gentoo"),
    ("", "Linux"),
])
def test_without_pretty_name_the_name_and_version(tmp_path: Path, text: str, name: str) -> None:
    write(tmp_path, "etc/os-release", text)
    assert identify(tmp_path) == FoundOS(kind="linux", name=name, evidence="etc/os-release")


def test_an_absolute_os_release_symlink_is_not_followed(tmp_path: Path) -> None:
    outside = write(tmp_path, "pe/os-release", 'PRETTY_NAME="The PE itself"\n')
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink(outside, root / "etc/os-release")
    write(root, "usr/lib/os-release", 'PRETTY_NAME="The old OS"\n')
    assert "The PE itself" in (root / "etc/os-release").read_text()  # what following it would report
    assert identify(root) == FoundOS(kind="linux", name="The old OS", evidence="usr/lib/os-release")
    (root / "usr/lib/os-release").unlink()
    assert identify(root) == FoundOS(kind="unknown", name="top level: etc, usr", evidence="")


def test_a_symlinked_directory_on_the_way_is_not_followed(tmp_path: Path) -> None:
    write(tmp_path, "pe/etc/os-release", 'PRETTY_NAME="The PE itself"\n')
    write(tmp_path, "pe/usr/lib/os-release", 'PRETTY_NAME="The PE itself"\n')
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path / "pe/etc", root / "etc")
    (root / "usr").mkdir()
    os.symlink("../../pe/usr/lib", root / "usr/lib")
    assert (root / "etc/os-release").is_file() and (root / "usr/lib/os-release").is_file()  # when followed
    assert identify(root) == FoundOS(kind="unknown", name="top level: etc, usr", evidence="")


def test_only_small_regular_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "etc/os-release").mkdir(parents=True)  # a directory, not a file
    write(tmp_path, "usr/lib/os-release", 'PRETTY_NAME="big"\n' + "#" * SMALL)  # larger than SMALL
    assert identify(tmp_path).kind == "unknown"


@pytest.mark.parametrize("rel", ["Windows/System32/config/SYSTEM", "windows/system32/CONFIG/system",
                                 "WINDOWS/SYSTEM32/Config/System"])
def test_windows_by_its_registry_hive_any_case(tmp_path: Path, rel: str) -> None:
    write(tmp_path, rel, b"regf" + b"\0" * 4096)
    write(tmp_path, "Users/ann/ntuser.dat", b"regf")
    found = identify(tmp_path)
    assert found == FoundOS(kind="windows", name="Windows", evidence="Windows/System32/config/SYSTEM")
    assert found.describe() == "Windows (Windows/System32/config/SYSTEM)"


def test_a_large_hive_is_still_recognised(tmp_path: Path) -> None:
    write(tmp_path, "Windows/System32/config/SYSTEM", b"regf" + b"\0" * (2 * SMALL))
    assert identify(tmp_path).kind == "windows"


@pytest.mark.parametrize("data", [b"not a hive", b"reg", b"", b"REGF...."])
def test_a_file_that_is_not_a_hive_is_not_windows(tmp_path: Path, data: bytes) -> None:
    write(tmp_path, "windows/system32/CONFIG/system", data)
    assert identify(tmp_path) == FoundOS(kind="unknown", name="top level: windows", evidence="")


def test_a_symlinked_hive_is_not_followed(tmp_path: Path) -> None:
    hive = write(tmp_path, "elsewhere/SYSTEM", b"regf" + b"\0" * 64)
    root = tmp_path / "root"
    (root / "Windows/System32/config").mkdir(parents=True)
    os.symlink(hive, root / "Windows/System32/config/SYSTEM")
    assert (root / "Windows/System32/config/SYSTEM").read_bytes().startswith(b"regf")  # when followed
    assert identify(root).kind == "unknown"


def test_the_marker_reports_resuming(tmp_path: Path) -> None:
    write(tmp_path, "etc/os-release", DEBIAN)
    state = {"deployment_id": "wave-1", "fstab": None,
             "os": {"kind": "linux", "name": "Debian GNU/Linux 11 (bullseye)", "evidence": "etc/os-release"}}
    write(tmp_path, MARKER, json.dumps(state))
    found = identify(tmp_path)
    assert found == FoundOS(kind="linux", name="Debian GNU/Linux 11 (bullseye)", evidence=MARKER,
                            resuming="wave-1")
    assert found.describe() == ("an interrupted in-place re-image by deployment wave-1 "
                                "(was Debian GNU/Linux 11 (bullseye))")


@pytest.mark.parametrize("marker", ["not json", "[1, 2]", '{"deployment_id": "d1"}', '{"os": {"kind": "linux"}}'])
def test_a_marker_that_is_not_ours_is_ignored(tmp_path: Path, marker: str) -> None:
    write(tmp_path, "etc/os-release", DEBIAN)
    write(tmp_path, MARKER, marker)
    assert identify(tmp_path) == FoundOS(kind="linux", name="Debian GNU/Linux 12 (bookworm)",
                                         evidence="etc/os-release")


def test_an_empty_root(tmp_path: Path) -> None:
    found = identify(tmp_path)
    assert found == FoundOS(kind="unknown", name="empty", evidence="")
    assert found.describe() == "no known OS (empty)"


def test_an_unknown_root_lists_its_top_level(tmp_path: Path) -> None:
    for name in ("k", "j", "i", "h", "g", "f", "e", "d", "c", "b", "a"):
        (tmp_path / name).mkdir()
    assert identify(tmp_path).name == "top level: a, b, c, d, e, f, g, h and 3 more"
    for name in ("k", "j", "i"):
        (tmp_path / name).rmdir()
    assert identify(tmp_path).name == "top level: a, b, c, d, e, f, g, h"


# choose --------------------------------------------------------------------------------------------------------

DISK = "/dev/vda"
LINUX = FoundOS(kind="linux", name="Debian GNU/Linux 12 (bookworm)", evidence="etc/os-release")
UBUNTU = FoundOS(kind="linux", name="Ubuntu 24.04 LTS", evidence="etc/os-release")
WINDOWS = FoundOS(kind="windows", name="Windows", evidence="Windows/System32/config/SYSTEM")
DATA = FoundOS(kind="unknown", name="top level: backups, photos", evidence="")


def part(number: int, fstype: str = "ext4", label: str | None = None, uuid: str | None = None,
         part_uuid: str | None = None) -> Partition:
    return Partition(number=number, path=f"{DISK}{number}", start=number << 30, size=1 << 30, fstype=fstype,
                     label=label, uuid=uuid, part_uuid=part_uuid)


def named(key: str, value: int | str, force: bool = False) -> InplaceSpec:
    return InplaceSpec(partition=Keep(index=0, key=key, value=value), force=force)


def resuming(found: FoundOS, deployment_id: str) -> FoundOS:
    return FoundOS(kind=found.kind, name=found.name, evidence=MARKER, resuming=deployment_id)


def test_the_one_os_is_chosen() -> None:
    surveyed = [Surveyed(part(2), DATA), Surveyed(part(3), None, "mount: bad superblock"),
                Surveyed(part(4, "xfs"), LINUX)]
    assert choose(surveyed, InplaceSpec(), DISK, "d1") is surveyed[2]
    assert choose([Surveyed(part(3, "ntfs"), WINDOWS)], InplaceSpec(), DISK, "d1").os == WINDOWS


def test_no_os_is_refused_listing_what_each_partition_held() -> None:
    surveyed = [Surveyed(part(2), DATA), Surveyed(part(3, "xfs"), None, "cannot mount /dev/vda3")]
    with pytest.raises(UnknownOSError) as info:
        choose(surveyed, InplaceSpec(), DISK, "d1")
    assert str(info.value) == (
        "no partition of /dev/vda holds an OS peagent recognises; found: partition 2 (ext4): no known OS "
        "(top level: backups, photos); partition 3 (xfs): not readable: cannot mount /dev/vda3. Name the "
        "partition (target.inplace.partition) and set target.inplace.force to re-image it anyway")


def test_nothing_surveyed_is_refused() -> None:
    with pytest.raises(UnknownOSError, match="found: no partition with a filesystem an OS lives on"):
        choose([], InplaceSpec(), DISK, "d1")


def test_two_oses_are_ambiguous() -> None:
    surveyed = [Surveyed(part(2), LINUX), Surveyed(part(3), DATA), Surveyed(part(4, "ntfs"), WINDOWS)]
    with pytest.raises(InplaceError) as info:
        choose(surveyed, InplaceSpec(), DISK, "d1")
    assert type(info.value) is InplaceError
    message = str(info.value)
    assert message.startswith("/dev/vda holds 2 operating systems (")
    assert "partition 2 (ext4): Debian GNU/Linux 12 (bookworm) (etc/os-release)" in message
    assert "partition 4 (ntfs): Windows (Windows/System32/config/SYSTEM)" in message
    assert message.endswith("name the one to re-image with target.inplace.partition")


@pytest.mark.parametrize("spec", [named("number", 3), named("label", "root"), named("uuid", "aaaa-bbbb"),
                                  named("uuid", "0FC63DAF-8483-4772-8E79-3D69D8477DE4")])
def test_a_named_partition_is_chosen_over_the_others(spec: InplaceSpec) -> None:
    surveyed = [Surveyed(part(2, label="old"), UBUNTU),
                Surveyed(part(3, label="root", uuid="AAAA-BBBB", part_uuid="0fc63daf-8483-4772-8e79-3d69d8477de4"),
                         LINUX)]
    assert choose(surveyed, spec, DISK, "d1") is surveyed[1]


def test_a_named_partition_with_an_unknown_os_needs_force() -> None:
    surveyed = [Surveyed(part(2), LINUX), Surveyed(part(3, label="data"), DATA)]
    with pytest.raises(UnknownOSError) as info:
        choose(surveyed, named("label", "data"), DISK, "d1")
    assert str(info.value).startswith("partition 3 (ext4): no known OS (top level: backups, photos) on /dev/vda: "
                                      "refusing to delete what it holds; set target.inplace.force to true")
    assert choose(surveyed, named("label", "data", force=True), DISK, "d1") is surveyed[1]


def test_a_named_partition_not_surveyed_is_refused() -> None:
    surveyed = [Surveyed(part(2), LINUX)]
    with pytest.raises(InplaceError) as info:
        choose(surveyed, named("number", 5), DISK, "d1")
    assert type(info.value) is InplaceError
    assert str(info.value) == ("target.inplace.partition (number 5) is not a partition of /dev/vda that could hold "
                               "an OS; found: partition 2 (ext4): Debian GNU/Linux 12 (bookworm) (etc/os-release)")


@pytest.mark.parametrize("force", [False, True])
def test_a_named_partition_that_could_not_be_mounted_is_refused(force: bool) -> None:
    surveyed = [Surveyed(part(2), None, "cannot mount /dev/vda2 (ext4, read-only): bad superblock")]
    with pytest.raises(InplaceError) as info:
        choose(surveyed, named("number", 2, force=force), DISK, "d1")
    assert type(info.value) is InplaceError
    assert str(info.value) == ("partition 2 (ext4): not readable: cannot mount /dev/vda2 (ext4, read-only): bad "
                               "superblock; nothing was changed")


@pytest.mark.parametrize("spec", [InplaceSpec(), named("number", 2)])
def test_a_marker_of_another_deployment_is_refused(spec: InplaceSpec) -> None:
    surveyed = [Surveyed(part(2), resuming(LINUX, "wave-1"))]
    with pytest.raises(InplaceError) as info:
        choose(surveyed, spec, DISK, "wave-2")
    assert type(info.value) is InplaceError
    assert str(info.value).startswith("partition 2 (ext4): an interrupted in-place re-image by deployment wave-1 "
                                      "(was Debian GNU/Linux 12 (bookworm)): its OS is partly deleted. Rerun "
                                      "deployment wave-1 to finish it")


def test_a_marker_of_another_deployment_is_taken_over_by_force() -> None:
    surveyed = [Surveyed(part(2), resuming(LINUX, "wave-1"))]
    assert choose(surveyed, named("number", 2, force=True), DISK, "wave-2") is surveyed[0]


@pytest.mark.parametrize("spec", [InplaceSpec(), named("number", 2)])
def test_a_marker_of_the_same_deployment_is_resumed(spec: InplaceSpec) -> None:
    surveyed = [Surveyed(part(2), resuming(LINUX, "wave-1")), Surveyed(part(3), DATA)]
    assert choose(surveyed, spec, DISK, "wave-1") is surveyed[0]
