"""Golden boot plans: what is created, deleted and ordered, and why, for the usual situations."""

from __future__ import annotations

from peagent.boot.efivars import parse_efibootmgr
from peagent.boot.plan import plan_boot, same_loader
from tests.unit.boot.test_efivars import NEW_ESP, OLD_ESP, OTHER_DISK_ESP, OVMF_FRESH, OVMF_WITH_OS, T

SHIM = "\\EFI\\debian\\shimx64.efi"


def plan(text, *, once=False, old=frozenset(), partuuid=NEW_ESP, loader=SHIM, label="debian"):
    return plan_boot(parse_efibootmgr(text), label=label, disk="/dev/vda", partition=1, partuuid=partuuid,
                     loader=loader, old_partuuids=set(old), once=once)


def test_fresh_ovmf_creates_ours_first_and_touches_nothing_else():
    p = plan(OVMF_FRESH)
    assert p.reuse is None
    assert [(s.action, s.num, s.order) for s in p.steps] == [("create", None, ()), ("order", None, (1, 2, 0, 3))]
    assert p.lines() == [
        f'boot entry "debian": /dev/vda partition 1 ({NEW_ESP}) {SHIM}, first in BootOrder',
        f'  create new entry: "debian" for {SHIM} on /dev/vda partition 1 ({NEW_ESP})',
        "  BootOrder := new entry,0001,0002,0000,0003: ours first, the others after it in their order",
    ]
    assert p.existing == {0, 1, 2, 3}


def test_redeploy_deletes_the_old_os_entry_of_this_disk_and_keeps_the_other_disk():
    p = plan(OVMF_WITH_OS, old={OLD_ESP, "5e1f0000-0000-4000-8000-000000000002"})
    assert [(s.action, s.num) for s in p.steps] == [("delete", 4), ("create", None), ("order", None)]
    assert p.steps[0].line() == (
        f'delete Boot0004: "debian" on partition {OLD_ESP} {SHIM}: its partition was on this disk before the wipe '
        "and is gone")
    # Windows on the other disk (5) stays, after ours, before the rest as it was.
    assert p.steps[-1].order == (5, 1, 2, 0, 3)
    assert p.existing == {0, 1, 2, 3, 5}


def test_without_old_partuuids_nothing_is_deleted():
    # The same listing, but the caller does not know that 4 was on this disk: never guess.
    p = plan(OVMF_WITH_OS)
    assert [s.action for s in p.steps] == ["create", "order"]
    assert p.steps[-1].order == (4, 5, 1, 2, 0, 3)


def test_redeploy_with_our_entry_reuses_it():
    # An image that keeps its partition GUIDs: the entry already points at our ESP and loader.
    # The caller's old_partuuids then holds our GUID too; it must not make us delete our own entry.
    text = OVMF_WITH_OS.replace("BootOrder: 0004,0005", "BootOrder: 0005,0004")
    p = plan(text, partuuid=OLD_ESP.upper(), loader="/EFI/Debian/SHIMX64.EFI", old={OLD_ESP})
    assert p.reuse == 4
    assert [(s.action, s.num) for s in p.steps] == [("reuse", 4), ("order", 4)]
    assert p.steps[-1].order == (5, 1, 2, 0, 3)
    assert p.lines()[2] == "  BootOrder := Boot0004,0005,0001,0002,0000,0003: ours first, the others after it in their order"


def test_reused_entry_already_first_needs_no_change():
    p = plan(OVMF_WITH_OS, partuuid=OLD_ESP)
    assert [(s.action, s.num) for s in p.steps] == [("reuse", 4)]


def test_duplicates_of_ours_are_deleted_and_inactive_ours_activated():
    text = (f"BootCurrent: 0002\nBootNext: 0002\nBootOrder: 0002,0007,0006,0009\n"
            f"Boot0002* UEFI PXEv4 (MAC:525400123456){T}PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400123456,1)/IPv4(0.0.0.0)\n"
            f"Boot0006  debian{T}HD(1,GPT,{NEW_ESP},0x800,0x100000)/File({SHIM})\n"
            f"Boot0007  debian{T}HD(1,GPT,{NEW_ESP},0x800,0x100000)/File({SHIM})\n"
            f"Boot0008* debian{T}HD(1,GPT,{NEW_ESP},0x800,0x100000)/File(\\EFI\\debian\\grubx64.efi)\n"
            f"Boot0009* debian{T}HD(1,GPT,{OTHER_DISK_ESP},0x800,0x100000)/File({SHIM})\n")
    p = plan(text)
    # 7 comes first in BootOrder: it is ours; 6 (identical) and 8 (our label, our partition) go;
    # 9 has our label but is on another disk: kept.
    assert p.reuse == 7
    assert [(s.action, s.num) for s in p.steps] == [
        ("delete", 6), ("delete", 8), ("reuse", 7), ("activate", 7), ("order", 7), ("clear-next", None)]
    assert "a duplicate of Boot0007 (same partition and loader)" in p.steps[0].reason
    assert 'a duplicate of ours (label "debian", our partition)' in p.steps[1].reason
    assert p.steps[4].order == (2, 9)
    assert p.steps[5].line() == "BootNext cleared: BootNext names Boot0002, which would boot once instead of ours"


def test_once_sets_bootnext_only():
    p = plan(OVMF_WITH_OS, once=True, old={OLD_ESP})
    assert [(s.action, s.num) for s in p.steps] == [("delete", 4), ("create", None), ("next", None)]
    assert p.lines()[0].endswith("next boot only (BootNext)")
    assert p.lines()[-1] == "  BootNext := new entry: boot the new OS once; BootOrder is left as it is"


def test_dangling_bootorder_numbers_are_dropped():
    text = OVMF_FRESH.replace("BootOrder: 0001,0002,0000,0003", "BootOrder: 0001,000F,0002,0002,0000,0003")
    p = plan(text)
    assert p.steps[-1].order == (1, 2, 0, 3)
    assert p.steps[-1].reason.endswith("; 000F dropped (no such entry)")


def test_loader_is_written_with_backslashes():
    p = plan(OVMF_FRESH, loader="EFI/debian/shimx64.efi")
    assert p.loader == SHIM
    assert same_loader("\\efi\\DEBIAN\\shimx64.EFI", "/EFI/debian/shimx64.efi")
    assert not same_loader(SHIM, None)
