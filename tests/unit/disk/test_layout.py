from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peagent.disk.layout import (
    GPT_ENTRY_ARRAY,
    ROLES,
    GiB,
    Keep,
    LayoutSpec,
    MiB,
    NewPartition,
    Size,
    parse_layout,
    plan_layout,
)
from peagent.errors import LayoutError, TaskError
from peagent.inventory import Disk, Partition

ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"
ROOT = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"


def disk(size: int = 64 * GiB, table: str | None = None, parts: tuple[Partition, ...] = (), sector: int = 512
         ) -> Disk:
    return Disk(name="sda", path="/dev/sda", size=size, logical_sector_size=sector, partition_table=table,
                partitions=parts)


def part(number: int, start: int, size: int, **kw: object) -> Partition:
    return Partition(number=number, path=f"/dev/sda{number}", start=start, size=size, **kw)  # type: ignore[arg-type]


def layout(create: list[dict], table: str = "gpt", keep: list[dict] | None = None) -> LayoutSpec:
    obj: dict[str, object] = {"table": table, "create": create}
    if keep is not None:
        obj["keep"] = keep
    return parse_layout(obj)


def task_error(obj: object) -> TaskError:
    with pytest.raises(TaskError) as info:
        parse_layout(obj)
    return info.value


def layout_error(spec: LayoutSpec, d: Disk) -> str:
    with pytest.raises(LayoutError) as info:
        plan_layout(spec, d)
    assert info.value.code == "layout.invalid" and info.value.exit_status == 2
    return str(info.value)


# --- parsing ----------------------------------------------------------------------------------

EXAMPLE = {
    "table": "gpt",
    "keep": [{"number": 3}, {"label": "DATA"}, {"uuid": "1A2B-3C4D"}],
    "create": [
        {"role": "esp", "size": "512MiB", "fs": "vfat", "label": "ESP"},
        {"role": "msr", "size": "16MiB"},
        {"role": "linux-root", "size": "fill", "fs": "ext4", "label": "root", "name": "root"},
        {"role": "swap", "size": "4GiB"},
        {"type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "size": "10%", "flags": ["hidden", "legacy_boot"]},
    ],
}


def test_the_example_layout_parses() -> None:
    spec = parse_layout(EXAMPLE)
    assert spec.table == "gpt"
    assert spec.keep == (Keep(0, "number", 3), Keep(1, "label", "DATA"), Keep(2, "uuid", "1A2B-3C4D"))
    esp, msr, root, swap, other = spec.create
    assert esp == NewPartition(0, "esp", ESP, Size("bytes", 512 * MiB, "512MiB"), "vfat", "ESP")
    assert (msr.type_id, msr.fs, msr.size) == (ROLES["msr"].gpt, "none", Size("bytes", 16 * MiB, "16MiB"))
    assert (root.type_id, root.size.kind, root.name, root.label) == (ROOT, "fill", "root", "root")
    assert (swap.fs, swap.size.value) == ("swap", 4 * GiB)  # swap's default filesystem
    assert (other.role, other.type_id, other.size) == (None, LINUX, Size("percent", 10, "10%"))
    assert other.flags == ("hidden", "legacy_boot")


def test_defaults_and_msdos_types() -> None:
    spec = layout([{"role": "esp", "size": "1.5GiB"}, {"type": "c", "size": "1 GiB", "flags": ["boot"]},
                   {"type": "0x83", "size": "fill"}], table="msdos")
    assert spec.keep == ()
    assert [(p.type_id, p.fs, p.size.value) for p in spec.create] == [
        ("0xef", "vfat", 1536 * MiB), ("0x0c", "none", GiB), ("0x83", "none", 0)]
    assert parse_layout({"table": "gpt"}) == LayoutSpec("gpt")


P = "target.partitions"
C0 = f"{P}.create[0]"
SIZE_EXPECTED = 'a size: "512MiB", "20GiB", "1TiB" (binary units), "25%" of the disk, or "fill"'


def create(table: str = "gpt", **fields: object) -> dict:
    return {"table": table, "create": [{"role": "linux-data", "size": "1GiB", **fields}]}


@pytest.mark.parametrize(("obj", "field", "expected", "found"), [
    ([], P, "an object", "a list of 0 items"),
    ({"table": "mbr"}, f"{P}.table", "gpt or msdos", '"mbr"'),
    ({"table": "gpt", "create": [], "wipe": True}, f"{P}.wipe", "one of the fields table, keep, create",
     "unknown field"),
    ({"table": "gpt", "keep": [{}]}, f"{P}.keep[0]", "exactly one of number, label or uuid", "none of them"),
    ({"table": "gpt", "keep": [{"number": 1, "label": "x"}]}, f"{P}.keep[0]",
     "exactly one of number, label or uuid", "number and label"),
    ({"table": "gpt", "keep": [{"number": 0}]}, f"{P}.keep[0].number", "a partition number, 1 or more", "0"),
    ({"table": "gpt", "keep": [{"number": "3"}]}, f"{P}.keep[0].number", "a partition number, 1 or more",
     '"3"'),
    ({"table": "gpt", "keep": [{"label": ""}]}, f"{P}.keep[0].label", "a non-empty label", '""'),
    ({"table": "gpt", "create": [{"size": "1GiB"}]}, C0,
     "a role (one of esp, bios-boot, msr, windows-data, windows-recovery, recovery, linux-root, linux-data, "
     "swap, home) or a type", "neither"),
    (create(type=LINUX), C0, "either role or type, not both", "both"),
    (create(role="root"), f"{C0}.role", "a role, one of esp, bios-boot, msr, windows-data, windows-recovery, "
     "recovery, linux-root, linux-data, swap, home", '"root"'),
    (create("msdos", role="msr"), f"{C0}.role",
     "a role that has an MBR type on an msdos table (esp, windows-data, windows-recovery, recovery, "
     "linux-root, linux-data, swap, home)", '"msr" (a GPT-only type, no MBR equivalent: use "table": "gpt")'),
    ({"table": "gpt", "create": [{"type": "0x83", "size": "1GiB"}]}, f"{C0}.type",
     "a GPT type GUID like 0fc63daf-8483-4772-8e79-3d69d8477de4 (the table is gpt)", '"0x83"'),
    ({"table": "msdos", "create": [{"type": LINUX, "size": "1GiB"}]}, f"{C0}.type",
     'an MBR type byte like "0x83" (the table is msdos)', f'"{LINUX}"'),
    ({"table": "msdos", "create": [{"type": "0x05", "size": "1GiB"}]}, f"{C0}.type",
     "the type of a primary data partition", '"0x05" (an extended partition)'),
    ({"table": "gpt", "create": [{"type": "00000000-0000-0000-0000-000000000000", "size": "1GiB"}]},
     f"{C0}.type", "a GPT type GUID like 0fc63daf-8483-4772-8e79-3d69d8477de4 (the table is gpt)",
     '"00000000-0000-0000-0000-000000000000"'),
    (create(size="512MB"), f"{C0}.size", SIZE_EXPECTED, '"512MB" (write binary units: MiB, GiB or TiB)'),
    (create(size="2G"), f"{C0}.size", SIZE_EXPECTED, '"2G" (write binary units: MiB, GiB or TiB)'),
    (create(size="big"), f"{C0}.size", SIZE_EXPECTED, '"big"'),
    (create(size=1024), f"{C0}.size", SIZE_EXPECTED, "1024"),
    (create(size="0.3GiB"), f"{C0}.size", "a whole number of MiB, at least 1MiB", '"0.3GiB"'),
    (create(size="0MiB"), f"{C0}.size", "a whole number of MiB, at least 1MiB", '"0MiB"'),
    (create(size="0%"), f"{C0}.size", "a percentage from 1% to 100%", '"0%"'),
    (create(size="101%"), f"{C0}.size", "a percentage from 1% to 100%", '"101%"'),
    (create(fs="btrfs"), f"{C0}.fs", "a filesystem, one of vfat, ext4, xfs, swap, ntfs, none", '"btrfs"'),
    (create(fs="swap"), f"{C0}.fs", "a filesystem for role linux-data: vfat, ext4, xfs, ntfs, none",
     '"swap" (swap goes in "role": "swap")'),
    (create(role="esp", fs="ext4"), f"{C0}.fs", "a filesystem for role esp: vfat, none", '"ext4"'),
    (create(label="x"), f"{C0}.label", "no label: a label belongs to a filesystem and fs is none", '"x"'),
    (create(fs="vfat", label="EFI SYSTEM PART"), f"{C0}.label",
     'a label for vfat: at most 11 ASCII characters, none of " * + , . / : ; < = > ? [ \\ ] |',
     '"EFI SYSTEM PART"'),
    (create(fs="vfat", label="A.B"), f"{C0}.label",
     'a label for vfat: at most 11 ASCII characters, none of " * + , . / : ; < = > ? [ \\ ] |', '"A.B"'),
    (create(fs="ext4", label="a-label-of-17-chr"), f"{C0}.label", "a label for ext4: at most 16 bytes (UTF-8)",
     '"a-label-of-17-chr"'),
    (create(fs="xfs", label="thirteen-char"), f"{C0}.label", "a label for xfs: at most 12 bytes (UTF-8)",
     '"thirteen-char"'),
    (create("msdos", name="root"), f"{C0}.name", "no name: partition names exist on gpt only", '"root"'),
    (create(name="r\u00f6\u00f6t"), f"{C0}.name", "1 to 36 printable ASCII characters", '"r\\u00f6\\u00f6t"'),
    (create(name="x" * 37), f"{C0}.name", "1 to 36 printable ASCII characters", '"' + "x" * 37 + '"'),
    (create(flags="boot"), f"{C0}.flags", "a list of partition flags", '"boot"'),
    (create(flags=[1]), f"{C0}.flags[0]", "a flag name", "1"),
    (create(flags=["bootable"]), f"{C0}.flags[0]",
     "a flag libparted offers on gpt: hidden, legacy_boot, boot, esp, swap, raid, lvm, hp-service, prep, "
     "msftres, bios_grub, atvrecv, diag, msftdata, irst, chromeos_kernel, bls_boot, linux-home",
     '"bootable"'),
    (create(flags=["lba"]), f"{C0}.flags[0]",
     "a flag libparted offers on gpt: hidden, legacy_boot, boot, esp, swap, raid, lvm, hp-service, prep, "
     "msftres, bios_grub, atvrecv, diag, msftdata, irst, chromeos_kernel, bls_boot, linux-home",
     '"lba" (libparted does not offer it on gpt)'),
    (create("msdos", flags=["lba"]), f"{C0}.flags[0]",
     "a flag libparted offers on msdos: boot, swap, raid, lvm, palo, prep, msftres, diag, irst, esp, bls_boot",
     '"lba" (on msdos libparted implements it as a variant of the type byte: give that byte as "type", '
     'e.g. "0x0c" for FAT32 with LBA, "0x1c" for hidden FAT32)'),
    (create(flags=["boot"]), f"{C0}.flags[0]",
     f"a flag that leaves the partition's type {LINUX} as it is on gpt (hidden, legacy_boot, or one that "
     "means this type)", f'"boot", which libparted implements as the type {ESP} (use "role": "esp")'),
    (create("msdos", flags=["raid"]), f"{C0}.flags[0]",
     "a flag that leaves the partition's type 0x83 as it is on msdos (boot, or one that means this type)",
     '"raid", which libparted implements as the type 0xfd (use "type": "0xfd")'),
    ({"table": "gpt", "create": [{"role": "esp", "size": "fill"}, {"role": "swap", "size": "fill"}]},
     f"{P}.create[1].size", 'at most one "fill" partition (create[0] already takes the rest)', '"fill"'),
    ({"table": "gpt", "create": [{"role": "esp", "size": "60%"}, {"role": "swap", "size": "50%"}]},
     f"{P}.create[1].size", "percentages adding up to at most 100% (those before this one add up to 60%)",
     '"50%"'),
    ({"table": "msdos", "create": [{"role": "esp", "size": "1GiB", "flags": ["boot"]},
                                   {"role": "swap", "size": "1GiB", "flags": ["boot"]}]},
     f"{P}.create[1].flags", "the boot flag on one partition only (msdos has one active partition; create[0] "
     "has it)", '"boot"'),
    ({"table": "msdos", "create": [{"role": "swap", "size": "1GiB"}] * 5}, f"{P}.create",
     "at most 4 partitions on msdos (logical partitions are not supported)", "a list of 5 items"),
])
def test_invalid_layouts_name_field_expectation_and_finding(obj, field, expected, found) -> None:
    exc = task_error(obj)
    assert (exc.field, exc.expected, exc.found) == (field, expected, found)


def test_consistent_type_flags_are_accepted() -> None:
    spec = layout([{"role": "esp", "size": "1GiB", "flags": ["boot", "esp", "boot"]},
                   {"role": "windows-data", "size": "1GiB", "flags": ["msftdata", "hidden"]}])
    assert [p.flags for p in spec.create] == [("boot", "esp"), ("msftdata", "hidden")]
    spec = layout([{"role": "esp", "size": "1GiB", "flags": ["boot", "esp"]}], table="msdos")
    assert spec.create[0].flags == ("boot", "esp")


# --- planning ---------------------------------------------------------------------------------

WINDOWS_AND_LINUX = [
    {"role": "esp", "size": "512MiB", "label": "ESP"},
    {"role": "msr", "size": "16MiB"},
    {"role": "linux-root", "size": "fill", "fs": "ext4", "label": "root", "name": "root"},
    {"role": "swap", "size": "4GiB"},
]


def test_fresh_gpt_layout_is_aligned_and_leaves_room_for_the_backup_table() -> None:
    size = 64 * GiB + 12345 * 512  # not a whole MiB
    plan = plan_layout(layout(WINDOWS_AND_LINUX), disk(size, "gpt", (part(1, MiB, GiB, fstype="ntfs"),)))
    assert plan.fresh and plan.table == "gpt" and plan.kept == ()
    assert [p.number for p in plan.deleted] == [1]
    end = (size - GPT_ENTRY_ARRAY - 512) // MiB * MiB
    assert plan.usable_start == MiB and plan.usable_end == end
    assert [(c.number, c.start, c.size) for c in plan.created] == [
        (1, MiB, 512 * MiB),
        (2, 513 * MiB, 16 * MiB),
        (3, 529 * MiB, end - 529 * MiB - 4 * GiB),
        (4, end - 4 * GiB, 4 * GiB),
    ]
    assert (plan.created[0].first_sector, plan.created[0].sectors) == (2048, 1048576)
    assert plan.render() == [
        "new gpt partition table on /dev/sda (64.0 GiB)",
        "delete 1: ntfs 1 GiB at 1 MiB",
        "create 1: esp 512 MiB vfat 'ESP' at 1 MiB",
        "create 2: msr 16 MiB at 513 MiB",
        "create 3: linux-root 59.5 GiB ext4 'root' name 'root' at 529 MiB",
        "create 4: swap 4 GiB swap at 60.0 GiB",
    ]


def test_gpt_backup_room_with_4k_sectors_and_exact_disk_end() -> None:
    # A disk of exactly 8 GiB: the last MiB holds the backup entries and header, so it stays free.
    plan = plan_layout(layout([{"role": "linux-data", "size": "fill"}]), disk(8 * GiB, sector=4096))
    (only,) = plan.created
    assert (only.start, only.end) == (MiB, 8 * GiB - MiB)
    assert (only.first_sector, only.sectors) == (256, (8 * GiB - 2 * MiB) // 4096)


def test_percentages_are_of_the_usable_area_rounded_down_to_whole_mib() -> None:
    plan = plan_layout(layout([{"role": "linux-data", "size": "33%"}, {"role": "swap", "size": "10%"},
                               {"role": "home", "size": "fill"}], table="msdos"), disk(10 * GiB + 5 * MiB))
    usable = 10 * GiB + 4 * MiB  # 1 MiB to the end of the disk
    a, b, c = plan.created
    assert a.size == usable * 33 // 100 // MiB * MiB == 3380 * MiB
    assert b.size == 1024 * MiB and b.start == a.end
    assert c.start == b.end and c.end == 10 * GiB + 5 * MiB


def test_msdos_area_ends_where_32_bit_sectors_end() -> None:
    plan = plan_layout(layout([{"role": "linux-data", "size": "fill"}], table="msdos"), disk(3 << 40))
    assert plan.usable_end == 2 << 40 and plan.created[0].end == 2 << 40


def test_fill_in_the_middle_leaves_the_later_partitions_at_the_end() -> None:
    plan = plan_layout(layout([{"role": "esp", "size": "fill"}, {"role": "swap", "size": "1GiB"}]),
                       disk(4 * GiB))
    esp, swap = plan.created
    assert (esp.start, esp.end, swap.start, swap.end) == (MiB, 3 * GiB - MiB, 3 * GiB - MiB, 4 * GiB - MiB)


def test_without_fill_the_rest_stays_free() -> None:
    plan = plan_layout(layout([{"role": "linux-data", "size": "1GiB"}]), disk(4 * GiB))
    assert [(c.start, c.size) for c in plan.created] == [(MiB, GiB)]


DATA = part(3, 40 * GiB, 20 * GiB, fstype="ext4", label="DATA", uuid="6f9f3a1e-0000-4000-8000-000000000003")
OLD = (
    part(1, MiB, 100 * MiB, fstype="vfat", label="EFI", uuid="1A2B-3C4D", type_guid=ESP),
    part(2, 101 * MiB, 40 * GiB - 101 * MiB, fstype="ntfs", label="Windows"),
    DATA,
    part(4, 60 * GiB, 4 * GiB - 2 * MiB, fstype="ntfs", label="Recovery"),
)


@pytest.mark.parametrize("keep", [{"number": 3}, {"label": "DATA"}, {"uuid": "6F9F3A1E-0000-4000-8000-000000000003"}])
def test_keep_by_number_label_or_uuid(keep) -> None:
    spec = layout(WINDOWS_AND_LINUX, keep=[keep])
    plan = plan_layout(spec, disk(64 * GiB, "gpt", OLD))
    assert not plan.fresh
    assert plan.kept == (DATA,)
    assert [p.number for p in plan.deleted] == [1, 2, 4]
    # The gap before DATA holds all four: fill takes what the swap partition after it leaves.
    assert [(c.number, c.start, c.size) for c in plan.created] == [
        (1, MiB, 512 * MiB),
        (2, 513 * MiB, 16 * MiB),
        (4, 529 * MiB, 36 * GiB - 529 * MiB),
        (5, 36 * GiB, 4 * GiB),
    ]
    assert plan.render() == [
        "existing gpt partition table on /dev/sda (64 GiB)",
        "delete 1: vfat 'EFI' 100 MiB at 1 MiB",
        "delete 2: ntfs 'Windows' 39.9 GiB at 101 MiB",
        "delete 4: ntfs 'Recovery' 4094 MiB at 60 GiB",
        "keep 3: ext4 'DATA' 20 GiB at 40 GiB",
        "create 1: esp 512 MiB vfat 'ESP' at 1 MiB",
        "create 2: msr 16 MiB at 513 MiB",
        "create 4: linux-root 35.5 GiB ext4 'root' name 'root' at 529 MiB",
        "create 5: swap 4 GiB swap at 36 GiB",
    ]


def test_new_partitions_skip_a_gap_too_small_and_keep_their_order() -> None:
    # Kept: 2 (at 1 MiB, 9 MiB) and 4 (at 20 GiB). Gaps: 10 MiB .. 20 GiB and 30 GiB .. end.
    kept = (part(2, MiB, 9 * MiB, label="A"), part(4, 20 * GiB, 10 * GiB, label="B"))
    spec = layout([{"role": "linux-data", "size": "25GiB"}, {"role": "swap", "size": "1GiB"},
                   {"role": "home", "size": "fill"}], keep=[{"number": 2}, {"number": 4}])
    plan = plan_layout(spec, disk(64 * GiB, "gpt", kept))
    end = plan.usable_end
    assert [(c.number, c.start, c.end) for c in plan.created] == [
        (1, 30 * GiB, 55 * GiB), (3, 55 * GiB, 56 * GiB), (5, 56 * GiB, end)]


def test_unaligned_kept_partitions_shrink_the_gaps_to_whole_mib() -> None:
    kept = (part(1, 63 * 512, 10 * MiB, label="OLD"),)  # a DOS-era partition at sector 63
    plan = plan_layout(layout([{"role": "linux-data", "size": "fill"}], "msdos", [{"number": 1}]),
                       disk(GiB, "dos", kept))
    (c,) = plan.created
    assert (c.number, c.start, c.end) == (2, 11 * MiB, GiB)


def test_keep_errors_list_the_partitions_that_exist() -> None:
    d = disk(64 * GiB, "gpt", OLD)
    listed = ("its partitions: 1: vfat 'EFI' 100 MiB at 1 MiB uuid 1A2B-3C4D; 2: ntfs 'Windows' 39.9 GiB at "
              "101 MiB; 3: ext4 'DATA' 20 GiB at 40 GiB uuid 6f9f3a1e-0000-4000-8000-000000000003; "
              "4: ntfs 'Recovery' 4094 MiB at 60 GiB")
    assert layout_error(layout([], keep=[{"label": "Data"}]), d) == \
        f"keep[0] (label 'Data') matches no partition on /dev/sda; {listed}"
    twins = disk(64 * GiB, "gpt", (part(1, MiB, GiB, label="X"), part(2, 2 * GiB, GiB, label="X")))
    assert layout_error(layout([], keep=[{"label": "X"}]), twins) == (
        "keep[0] (label 'X') matches 2 partitions (1, 2) on /dev/sda; its partitions: 1: no filesystem 'X' "
        "1 GiB at 1 MiB; 2: no filesystem 'X' 1 GiB at 2 GiB")
    assert layout_error(layout([], keep=[{"number": 3}, {"label": "DATA"}]), d) == \
        "keep[0] (number 3) and keep[1] (label 'DATA') both match partition 3; keep it once"


def test_keep_needs_the_same_table_type() -> None:
    assert layout_error(layout([], keep=[{"number": 3}]), disk(64 * GiB, "dos", OLD)) == (
        "keeping partitions needs the disk's gpt table, but /dev/sda has a msdos table: keep none (the table "
        "is made afresh) or give the table type it has")
    assert layout_error(layout([], "msdos", keep=[{"number": 3}]), disk(64 * GiB, None)) == (
        "keeping partitions needs the disk's msdos table, but /dev/sda has no partition table: keep none (the "
        "table is made afresh) or give the table type it has")


def test_layout_larger_than_the_disk() -> None:
    spec = layout([{"role": "esp", "size": "512MiB"}, {"role": "linux-root", "size": "fill"},
                   {"role": "swap", "size": "8GiB"}])
    assert layout_error(spec, disk(8 * GiB)) == (
        "the layout is larger than /dev/sda (8 GiB (8589934592 bytes)): the new partitions need 8705 MiB "
        "(9127854080 bytes) (create[0] 512 MiB, create[1] fill 1 MiB, create[2] 8 GiB) but the disk's usable "
        "area (1 MiB to 8191 MiB) holds 8190 MiB (8587837440 bytes)")


def test_a_partition_that_fits_no_gap_names_the_gaps_and_the_kept_partitions() -> None:
    kept = (part(1, 10 * GiB, 10 * GiB, label="A"), part(2, 30 * GiB, 10 * GiB, label="B"))
    spec = layout([{"role": "linux-data", "size": "9GiB"}] * 3, keep=[{"number": 1}, {"number": 2}])
    assert layout_error(spec, disk(48 * GiB, "gpt", kept)) == (
        "create[2] (linux-data, 9 GiB (9663676416 bytes)) fits in no free gap from the end of create[1] "
        "(29 GiB) on: new partitions are laid out in the order listed. The free gaps are 1 MiB to 10 GiB "
        "(10.0 GiB (10736369664 bytes)); 20 GiB to 30 GiB (10 GiB (10737418240 bytes)); 40 GiB to 48.0 GiB "
        "(8191 MiB (8588886016 bytes)); the kept partitions 1 at 10 GiB to 20 GiB, 2 at 30 GiB to 40 GiB "
        "split the free space")


def test_kept_partition_over_the_backup_table_or_each_other_is_refused() -> None:
    # The disk shrank (an image of a larger disk): partition 3 runs past the backup table.
    shrunk = disk(48 * MiB, "gpt", (part(3, 15 * MiB, 48 * MiB, label="DATA"),))
    assert layout_error(layout([], keep=[{"number": 3}]), shrunk) == (
        "kept partition 3: no filesystem 'DATA' 48 MiB at 15 MiB (15 MiB (15728640 bytes) to 63 MiB (66060288 "
        "bytes)) overlaps the gpt headers and entries, or lies past the end of the disk: on this 48 MiB "
        "(50331648 bytes) disk partitions must lie between byte 17408 and byte 50314752; it cannot be kept")
    both = disk(GiB, "gpt", (part(1, MiB, 10 * MiB), part(2, 5 * MiB, 10 * MiB)))
    assert layout_error(layout([], keep=[{"number": 1}, {"number": 2}]), both) == (
        "kept partitions 1 (1 MiB (1048576 bytes) to 11 MiB (11534336 bytes)) and 2 (5 MiB (5242880 bytes) to "
        "15 MiB (15728640 bytes)) overlap")


def test_msdos_limits() -> None:
    logical = disk(GiB, "dos", (part(1, MiB, 100 * MiB, type_guid="0x5"), part(5, 2 * MiB, 10 * MiB)))
    assert layout_error(layout([], "msdos", [{"number": 5}]), logical) == \
        "partition 5 is a logical partition: only primary partitions can be kept on msdos"
    assert layout_error(layout([], "msdos", [{"number": 1}]), logical) == \
        "partition 1 is an extended partition: only primary partitions can be kept on msdos"
    three = disk(GiB, "dos", (part(1, MiB, MiB), part(2, 2 * MiB, MiB), part(3, 3 * MiB, MiB)))
    spec = layout([{"role": "swap", "size": "1MiB"}] * 2, "msdos", [{"number": n} for n in (1, 2, 3)])
    assert layout_error(spec, three) == \
        "msdos holds at most 4 partitions (logical partitions are not supported): this layout keeps 3 and creates 2"


def test_sizes_too_small() -> None:
    assert layout_error(layout([{"role": "esp", "size": "32MiB"}]), disk(GiB)) == \
        "create[0] (esp, 32 MiB (33554432 bytes)) is too small for vfat: mkfs needs at least 33 MiB (34603008 bytes)"
    assert layout_error(layout([{"role": "linux-data", "size": "1%"}]), disk(64 * MiB)) == \
        "create[0] (linux-data, 1% of the usable 62 MiB (65011712 bytes)) is less than 1 MiB"
    assert layout_error(layout([]), disk(MiB + 512 * 34)) == \
        "/dev/sda (1041 KiB (1065984 bytes)) is too small for a gpt partition table with even one 1 MiB partition"


def test_specs_built_in_code_are_checked_too() -> None:
    fill = NewPartition(0, "swap", ROLES["swap"].gpt, Size("fill"), "swap")
    assert layout_error(LayoutSpec("gpt", create=(fill, fill)), disk()) == \
        "create[0]: only one partition can fill the rest (create[0] does)"
    half = NewPartition(0, "swap", ROLES["swap"].gpt, Size("percent", 60), "swap")
    assert layout_error(LayoutSpec("gpt", create=(half, half)), disk()) == \
        "the percentages of the new partitions add up to 120%, more than 100%"


# --- the property: whatever the layout, the plan is sound ------------------------------------

sizes = st.one_of(
    st.integers(1, 4096).map(lambda n: f"{n}MiB"),
    st.integers(1, 4).map(lambda n: f"{n}GiB"),
    st.integers(1, 30).map(lambda n: f"{n}%"),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[LayoutSpec, Disk]:
    table = draw(st.sampled_from(["gpt", "msdos"]))
    sector = draw(st.sampled_from([512, 4096]))
    size = draw(st.integers(64 * MiB // sector, 200 * GiB // sector)) * sector
    # Existing partitions: sorted, non-overlapping, anywhere in the usable area, possibly unaligned.
    first = 34 * 512 if sector == 512 else 6 * 4096
    bounds = sorted(draw(st.lists(st.integers(first // sector, (size - 40 * 512) // sector - 1),
                                  min_size=0, max_size=6, unique=True)))
    parts = []
    for i, (a, b) in enumerate(zip(bounds[::2], bounds[1::2], strict=False)):
        if b > a:
            parts.append(part(i + 1, a * sector, (b - a) * sector, label=f"P{i + 1}"))
    numbers = [p.number for p in parts]
    kept_numbers = draw(st.lists(st.sampled_from(numbers), unique=True, max_size=len(parts))) if parts else []
    most = 4 - len(kept_numbers) if table == "msdos" else 8
    create = []
    n = draw(st.integers(min(1, most), max(0, min(most, 5))))
    fill_at = draw(st.integers(-1, n - 1)) if n else -1
    percent = 0
    for i in range(n):
        text = "fill" if i == fill_at else draw(sizes)
        if text.endswith("%"):
            if percent + int(text[:-1]) > 100:
                text = "1MiB"
            else:
                percent += int(text[:-1])
        create.append({"role": draw(st.sampled_from(["linux-data", "swap", "home"])), "size": text})
    spec = layout(create, table, [{"number": k} for k in kept_numbers] or None)
    d = disk(size, "gpt" if table == "gpt" else "dos", tuple(parts), sector)
    return spec, d


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_planned_partitions_are_aligned_disjoint_inside_the_disk_and_keep_what_is_kept(scenario) -> None:
    spec, d = scenario
    try:
        plan = plan_layout(spec, d)
    except LayoutError:
        return  # a refusal is fine; a wrong plan is not
    kept = {p.number: p for p in d.partitions if any(k.value == p.number for k in spec.keep)}
    assert {p.number: p for p in plan.kept} == kept
    assert set(plan.deleted) == set(d.partitions) - set(kept.values())
    extents = [(c.start, c.end) for c in plan.created] + [(p.start, p.start + p.size) for p in plan.kept]
    extents.sort()
    for a, b in itertools.pairwise(extents):
        assert a[1] <= b[0], "overlap"
    for c in plan.created:
        assert c.start % MiB == 0 and c.size % MiB == 0 and c.size >= MiB
        assert plan.usable_start <= c.start and c.end <= plan.usable_end
        assert c.start == c.first_sector * d.logical_sector_size
    if spec.table == "gpt":
        assert plan.usable_end <= d.size - GPT_ENTRY_ARRAY - d.logical_sector_size
    assert sum(c.size for c in plan.created) + sum(p.size for p in plan.kept) <= d.size
    numbers = [c.number for c in plan.created] + list(kept)
    assert len(numbers) == len(set(numbers))
    assert [c.number for c in plan.created] == sorted(c.number for c in plan.created)
    # New partitions lie on the disk in the order listed.
    assert [c.start for c in plan.created] == sorted(c.start for c in plan.created)


def test_keep_by_gpt_partition_guid() -> None:
    part = Partition(number=2, path="/dev/vda2", start=1 << 30, size=1 << 30, fstype="ext4",
                     uuid="aaaaaaaa-0000-4000-8000-000000000001", part_uuid="BBBBBBBB-0000-4000-8000-000000000002")
    disk = Disk(name="vda", path="/dev/vda", size=8 << 30, partition_table="gpt", partitions=(part,))
    spec = parse_layout({"table": "gpt", "keep": [{"uuid": "bbbbbbbb-0000-4000-8000-000000000002"}],
                         "create": [{"role": "linux-data", "size": "fill"}]})
    assert [p.number for p in plan_layout(spec, disk).kept] == [2]
