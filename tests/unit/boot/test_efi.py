"""The efibootmgr edge: the exact commands a plan becomes, reading the state, finding the loader
and the ESP (on sfdisk's real JSON)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from peagent.boot.efi import apply_boot, efi_available, find_esp, find_loader, parse_sfdisk_esp, read_vars
from peagent.boot.efivars import parse_efibootmgr
from peagent.boot.plan import plan_boot
from peagent.disk.tools import NOT_INSTALLED, ToolResult, run_tool
from peagent.errors import DeviceError
from tests.unit.boot.test_efivars import NEW_ESP, OLD_ESP, OVMF_FRESH, OVMF_WITH_OS, T

SHIM = "\\EFI\\debian\\shimx64.efi"
CREATED = f"Boot0004* debian{T}HD(1,GPT,{NEW_ESP},0x800,0x100000)/File({SHIM})\n"


class FakeRun:
    """Records argv; answers from ``answers`` (argv tuple -> ToolResult), else success with no output."""

    def __init__(self, answers: dict[tuple[str, ...], ToolResult] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], *, timeout: float | None = None) -> ToolResult:
        args = tuple(argv)
        self.calls.append(args)
        return self.answers.get(args, ToolResult(args, 0))


def ok(argv, stdout="", stderr="", code=0):
    return ToolResult(tuple(argv), code, stdout, stderr)


def make_plan(text, *, once=False, old=frozenset()):
    return plan_boot(parse_efibootmgr(text), label="debian", disk="/dev/vda", partition=1, partuuid=NEW_ESP,
                     loader=SHIM, old_partuuids=set(old), once=once)


CREATE = ("efibootmgr", "-c", "-d", "/dev/vda", "-p", "1", "-L", "debian", "-l", SHIM)


def test_apply_redeploy_runs_exactly_delete_create_order():
    plan = make_plan(OVMF_WITH_OS, old={OLD_ESP})
    # efibootmgr -c prints the listing afterwards (without -v: labels only); 0004 is free again.
    listing = "BootCurrent: 0002\nBootOrder: 0004,0005,0001,0002,0000,0003\nBoot0004* debian\nBoot0005* Windows Boot Manager\n"
    run = FakeRun({CREATE: ok(CREATE, listing)})
    done = apply_boot(plan, run)
    assert run.calls == [
        ("efibootmgr", "-b", "0004", "-B"),
        CREATE,
        ("efibootmgr", "-o", "0004,0005,0001,0002,0000,0003"),
    ]
    assert done[1] == f'create Boot0004: "debian" for {SHIM} on /dev/vda partition 1 ({NEW_ESP})'
    assert done[2].startswith("BootOrder := Boot0004,0005,0001,0002,0000,0003: ")


def test_apply_once_creates_without_touching_bootorder_then_sets_bootnext():
    plan = make_plan(OVMF_FRESH, once=True)
    create_only = ("efibootmgr", "-C", *CREATE[2:])
    run = FakeRun({create_only: ok(create_only, OVMF_FRESH + CREATED)})
    apply_boot(plan, run)
    assert run.calls == [create_only, ("efibootmgr", "-n", "0004")]


def test_apply_reuse_activates_and_clears_bootnext():
    text = (f"BootNext: 0002\nBootOrder: 0002,0007\nBoot0002* PXE{T}PciRoot(0x0)/MAC(525400123456,1)\n"
            f"Boot0007  debian{T}HD(1,GPT,{NEW_ESP},0x800,0x100000)/File({SHIM})\n")
    run = FakeRun()
    done = apply_boot(make_plan(text), run)
    assert run.calls == [("efibootmgr", "-b", "0007", "-a"), ("efibootmgr", "-o", "0007,0002"), ("efibootmgr", "-N")]
    assert done[0].startswith("reuse Boot0007: ")


def test_apply_finds_the_new_number_with_a_second_listing_when_needed():
    # -c printed nothing usable (e.g. quiet): a fresh `efibootmgr -v` tells which entry is new.
    plan = make_plan(OVMF_FRESH)
    verbose = ("efibootmgr", "-v")
    run = FakeRun({verbose: ok(verbose, OVMF_FRESH.replace("Boot0000*", "Boot0009*") + CREATED)})
    # 0009 is new too (another tool made it meanwhile): the one on our partition and loader is ours.
    apply_boot(plan, run)
    assert run.calls[-1] == ("efibootmgr", "-o", "0004,0001,0002,0000,0003")


def test_apply_failure_carries_efibootmgr_stderr():
    plan = make_plan(OVMF_FRESH)
    stderr = ("Could not prepare Boot variable: No such file or directory\nerror trace:\n"
              " linux.c:454 device_get(): unknown storage interface\n")
    run = FakeRun({CREATE: ok(CREATE, "", stderr, 5)})
    with pytest.raises(DeviceError) as err:
        apply_boot(plan, run)
    assert "efibootmgr -c -d /dev/vda -p 1 -L debian" in str(err.value)
    assert "Could not prepare Boot variable" in str(err.value) and "unknown storage interface" in str(err.value)
    assert run.calls == [CREATE]  # nothing after a failure


def test_apply_no_new_entry_is_an_error():
    run = FakeRun({CREATE: ok(CREATE, OVMF_FRESH), ("efibootmgr", "-v"): ok(("efibootmgr", "-v"), OVMF_FRESH)})
    with pytest.raises(DeviceError, match="no new entry"):
        apply_boot(make_plan(OVMF_FRESH), run)


def test_read_vars_parses_and_mounts_efivarfs(tmp_path):
    sys_root = tmp_path / "sys"
    (sys_root / "firmware" / "efi" / "efivars").mkdir(parents=True)
    assert efi_available(sys_root) and not efi_available(tmp_path / "nosys")
    verbose = ("efibootmgr", "-v")
    run = FakeRun({verbose: ok(verbose, OVMF_FRESH)})
    state = read_vars(run, sys_root)
    assert state.order == (1, 2, 0, 3)
    assert run.calls[0] == ("mount", "-t", "efivarfs", "efivarfs", str(sys_root / "firmware/efi/efivars"))


def test_read_vars_errors():
    verbose = ("efibootmgr", "-v")
    missing = FakeRun({verbose: ok(verbose, "", "efibootmgr: command not found", NOT_INSTALLED)})
    with pytest.raises(DeviceError, match="efibootmgr is not installed in the PE"):
        read_vars(missing, Path("/nonexistent"))
    bios = FakeRun({verbose: ok(verbose, "", "EFI variables are not supported on this system.\n", 2)})
    with pytest.raises(DeviceError, match=r"efibootmgr -v failed \(status 2\): EFI variables are not supported"):
        read_vars(bios, Path("/nonexistent"))


def test_read_vars_with_the_real_efibootmgr():
    # Bookworm's efibootmgr 17 on this machine: the state on UEFI, its complaint otherwise.
    if efi_available():
        assert read_vars().order is not None
    else:
        with pytest.raises(DeviceError, match=r"EFI variables are not supported|not installed"):
            read_vars()


def tree(root: Path, *files: str) -> Path:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"MZ")
    return root


def test_find_loader_odd_case_and_preferences(tmp_path):
    esp = tree(tmp_path / "a", "efi/Debian/SHIMX64.EFI", "efi/Debian/grubx64.efi", "efi/boot/bootx64.efi",
               "efi/microsoft/boot/bootmgfw.efi")
    assert find_loader(esp, "x86_64") == "\\efi\\Debian\\SHIMX64.EFI"
    grub_only = tree(tmp_path / "b", "EFI/ubuntu/grubx64.efi", "EFI/Microsoft/Boot/bootmgfw.efi")
    assert find_loader(grub_only, "x86_64") == "\\EFI\\ubuntu\\grubx64.efi"
    windows = tree(tmp_path / "c", "EFI/Microsoft/Boot/BOOTMGFW.EFI", "EFI/Boot/bootx64.efi")
    assert find_loader(windows, "x86_64") == "\\EFI\\Microsoft\\Boot\\BOOTMGFW.EFI"
    removable = tree(tmp_path / "d", "EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/BOOTAA64.EFI", "EFI/BOOT/shimx64.efi")
    assert find_loader(removable, "x86_64") == "\\EFI\\BOOT\\BOOTX64.EFI"  # shim in BOOT/ is not a vendor's
    assert find_loader(removable, "aarch64") == "\\EFI\\BOOT\\BOOTAA64.EFI"
    assert find_loader(tree(tmp_path / "e", "EFI/debian/shimx64.efi"), "aarch64") is None
    assert find_loader(tmp_path / "empty") is None


# sfdisk --json from util-linux 2.38.1 (bookworm), on an NVMe disk and on an MBR disk.
SFDISK_GPT = """{
   "partitiontable": {
      "label": "gpt",
      "id": "4655F686-1D3A-344C-9669-B1C9DFEA9D5E",
      "device": "/dev/nvme0n1",
      "unit": "sectors",
      "firstlba": 2048,
      "lastlba": 131038,
      "sectorsize": 512,
      "partitions": [
         {
            "node": "/dev/nvme0n1p1",
            "start": 2048,
            "size": 2048,
            "type": "21686148-6449-6E6F-744E-656564454649",
            "uuid": "0A3C0F41-5C0E-9B4A-8E1B-1F5D5C4B3A21"
         },{
            "node": "/dev/nvme0n1p2",
            "start": 4096,
            "size": 65536,
            "type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "uuid": "EE8B347B-DCF0-594A-9C03-663A852E696E",
            "name": "EFI System"
         },{
            "node": "/dev/nvme0n1p3",
            "start": 69632,
            "size": 61440,
            "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "uuid": "D72B62BE-FB25-3E4C-A981-651CFAAEA3E1"
         }
      ]
   }
}"""
SFDISK_DOS = """{
   "partitiontable": {
      "label": "dos",
      "id": "0x1234abcd",
      "device": "/dev/sda",
      "unit": "sectors",
      "sectorsize": 512,
      "partitions": [
         {"node": "/dev/sda1", "start": 2048, "size": 65536, "type": "83", "bootable": true},
         {"node": "/dev/sda2", "start": 67584, "size": 63488, "type": "ef"}
      ]
   }
}"""


def test_parse_sfdisk_esp():
    assert parse_sfdisk_esp(SFDISK_GPT) == (2, "ee8b347b-dcf0-594a-9c03-663a852e696e")
    assert parse_sfdisk_esp(SFDISK_DOS) == (2, "1234abcd-02")
    assert parse_sfdisk_esp(SFDISK_GPT.replace("C12A7328", "00000000")) is None
    with pytest.raises(DeviceError, match="sfdisk --json printed no partition table"):
        parse_sfdisk_esp("sfdisk: cannot open /dev/sdz")


def test_find_esp_runs_sfdisk():
    argv = ("sfdisk", "--json", "/dev/nvme0n1")
    run = FakeRun({argv: ok(argv, SFDISK_GPT)})
    assert find_esp("/dev/nvme0n1", run) == (2, "ee8b347b-dcf0-594a-9c03-663a852e696e")
    failing = FakeRun({argv: ok(argv, "", "sfdisk: /dev/nvme0n1: does not contain a recognized partition table", 1)})
    with pytest.raises(DeviceError, match="does not contain a recognized partition table"):
        find_esp("/dev/nvme0n1", failing)


def test_find_esp_on_a_real_image(tmp_path):
    # sfdisk is in the PE (util-linux) and here: the parser must read what it really prints.
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * (64 << 20))
    layout = ("label: gpt\nsize=32M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, "
              "uuid=5D8A3C1E-0000-4000-8000-00000000ABCD\ntype=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
    subprocess.run(["sfdisk", "-q", str(image)], input=layout, text=True, check=True, capture_output=True)
    assert find_esp(str(image), run_tool) == (1, "5d8a3c1e-0000-4000-8000-00000000abcd")
