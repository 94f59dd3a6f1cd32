"""The facts a layout is checked against: data only, no logic.

The sizes partition tables allow (gpt's entry array and 128 partitions, msdos's 4 primaries and
32-bit sector numbers), the filesystems and their minimum sizes, the roles a task names (each one
GPT type GUID and, where one exists, one MBR type byte: the table in :mod:`peagent.disk.layout`),
and libparted's flags in terms of those types.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
ALIGN = MiB  # every new partition starts and ends on a 1 MiB boundary

TABLES = ("gpt", "msdos")
FILESYSTEMS = ("vfat", "ext4", "xfs", "swap", "ntfs", "none")
GPT_ENTRY_ARRAY = 128 * 128  # bytes: 128 entries of 128 bytes, after each of the two headers
GPT_MAX_PARTITIONS = 128
MSDOS_MAX_PRIMARY = 4
MSDOS_MAX_SECTORS = 1 << 32  # MBR entries hold 32-bit sector numbers
MSDOS_EXTENDED = (0x05, 0x0F, 0x85)

# The smallest partition each filesystem's mkfs makes properly (measured with bookworm's tools).
FS_MIN_SIZE = {"vfat": 33 * MiB, "xfs": 300 * MiB, "ntfs": 2 * MiB}

_DATA_FS = ("vfat", "ext4", "xfs", "ntfs", "none")


@dataclass(frozen=True)
class Role:
    name: str
    gpt: str  # type GUID, lower case
    mbr: str | None  # type byte as "0x83", None when the role has no MBR equivalent
    what: str
    default_fs: str = "none"
    filesystems: tuple[str, ...] = _DATA_FS


_RECOVERY = "de94bba4-06d1-4d40-a16a-bfd50179d6ac"
ROLES: dict[str, Role] = {r.name: r for r in (
    Role("esp", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "0xef", "EFI system partition",
         "vfat", ("vfat", "none")),
    Role("bios-boot", "21686148-6449-6e6f-744e-656564454649", None, "BIOS boot partition",
         "none", ("none",)),
    Role("msr", "e3c9e316-0b5c-4db8-817d-f92df00215ae", None, "Microsoft reserved partition",
         "none", ("none",)),
    Role("windows-data", "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "0x07", "Microsoft basic data"),
    Role("windows-recovery", _RECOVERY, "0x27", "Windows recovery environment"),
    Role("recovery", _RECOVERY, "0x27", "recovery (as windows-recovery)"),
    Role("linux-root", "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "0x83", "Linux root (x86-64)"),
    Role("linux-data", "0fc63daf-8483-4772-8e79-3d69d8477de4", "0x83", "Linux filesystem data"),
    Role("swap", "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "0x82", "Linux swap",
         "swap", ("swap", "none")),
    Role("home", "933ac7e1-2eb4-4f13-b844-0e14e2aef915", "0x83", "Linux /home"),
)}

# libparted's partition flags (pyparted 3.12's parted.partitionFlag, libparted 3.5), and what each
# does per table type. libparted implements most flags by rewriting the partition's type (on gpt
# "boot" *is* the ESP type GUID); only a few are bits beside the type. Since the type here comes
# from the role or type, a type-setting flag is accepted only when it agrees with that type (it
# changes nothing), and refused otherwise. tests/unit/disk/test_flags.py checks this table against
# pyparted itself. None: a bit beside the type; absent: libparted does not offer it on that table.
LIBPARTED_FLAGS = (
    "boot", "root", "swap", "hidden", "raid", "lvm", "lba", "hp-service", "palo", "prep", "msftres",
    "bios_grub", "atvrecv", "diag", "legacy_boot", "msftdata", "irst", "esp", "chromeos_kernel",
    "bls_boot", "linux-home",
)
FLAG_TYPES: dict[str, dict[str, str | None]] = {
    "gpt": {
        "hidden": None,  # attribute bit 0 ("required partition"), as libparted writes it
        "legacy_boot": None,  # attribute bit 2 ("legacy BIOS bootable")
        "boot": ROLES["esp"].gpt,
        "esp": ROLES["esp"].gpt,
        "swap": ROLES["swap"].gpt,
        "raid": "a19d880f-05fc-4d3b-a006-743f0f84911e",
        "lvm": "e6d6d379-f507-44c2-a23c-238f2a3df928",
        "hp-service": "e2a1e728-32e3-11d6-a682-7b03a0000000",
        "prep": "9e1a2d38-c612-4316-aa26-8b49521e5a8b",
        "msftres": ROLES["msr"].gpt,
        "bios_grub": ROLES["bios-boot"].gpt,
        "atvrecv": "5265636f-7665-11aa-aa11-00306543ecac",
        "diag": _RECOVERY,
        "msftdata": ROLES["windows-data"].gpt,
        "irst": "d3bfe2de-3daf-11df-ba40-e3a556d89593",
        "chromeos_kernel": "fe3a2a5d-4f32-41a7-b725-accc3285a309",
        "bls_boot": "bc13c2ff-59e6-4262-a352-b275fd6f7172",
        "linux-home": ROLES["home"].gpt,
    },
    "msdos": {
        "boot": None,  # the active bit
        "swap": "0x82",
        "raid": "0xfd",
        "lvm": "0x8e",
        "palo": "0xf0",
        "prep": "0x41",
        "msftres": "0x27",
        "diag": "0x12",
        "irst": "0x84",
        "esp": "0xef",
        "bls_boot": "0xea",
    },
}
# On msdos libparted's hidden and lba pick variants of a FAT/NTFS type byte (0x0b -> 0x1b, 0x0c):
# give that byte as "type" instead.
_MSDOS_TYPE_VARIANT_FLAGS = ("hidden", "lba")
