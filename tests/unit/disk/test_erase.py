"""Erase: the spec, the plan-time decisions per mode and capability, the sampled positions, and the
erase itself carried out on regular files with scripted tools (the loop-device and QEMU runs are in
tests/integration and tests/vm)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import replace

import pytest

import peagent.disk.erase.secure as erase_module
from peagent.disk.capabilities import EraseCaps
from peagent.disk.erase import (
    ATA_PASSWORD,
    EraseSpec,
    check_erase,
    choose_secure,
    erase,
    expected_data,
    metadata_regions,
    parse_erase,
    parse_sanitize_log,
    progress_total,
    sample_positions,
    secure_methods,
    signatures,
    zero_range,
)
from peagent.disk.tools import ToolResult
from peagent.errors import EraseError, EraseUnsupportedError, EraseVerifyError, TaskError
from tests.unit.disk.fakes import FakeRunner, fixture, ok

MIB = 1 << 20
GIB = 1 << 30

# --- the spec ------------------------------------------------------------------------------------


def test_shorthand_and_object():
    assert parse_erase("zero") == EraseSpec("zero", "auto", 64)
    assert parse_erase({"mode": "secure", "method": "ata-enhanced", "samples": 16}) == \
        EraseSpec("secure", "ata-enhanced", 16)
    assert parse_erase({"mode": "discard", "samples": 0}) == EraseSpec("discard", "auto", 0)


MODES_OR_OBJECT = "one of metadata, discard, zero, secure, or an object with mode, method and samples"
METHODS = ("auto, nvme-format-crypto, nvme-format, nvme-sanitize-crypto, nvme-sanitize-block, ata-enhanced, "
           "ata, nvme-sanitize-overwrite")


@pytest.mark.parametrize(("value", "message"), [
    ("wipe", f'erase: expected {MODES_OR_OBJECT}, found "wipe"'),
    (5, f"erase: expected {MODES_OR_OBJECT}, found 5"),
    (None, f"erase: expected {MODES_OR_OBJECT}, found null"),
    ({}, "erase.mode: expected one of metadata, discard, zero, secure, found nothing (the field is required)"),
    ({"mode": "shred"}, 'erase.mode: expected one of metadata, discard, zero, secure, found "shred"'),
    ({"mode": "zero", "method": "auto"},
     'erase.method: expected no method: only mode "secure" has methods, found "auto"'),
    ({"mode": "secure", "method": "gutmann"}, f'erase.method: expected one of {METHODS}, found "gutmann"'),
    ({"mode": "zero", "samples": -1}, "erase.samples: expected a number of sample blocks to read back, 0 to "
                                      "4096, found -1"),
    ({"mode": "zero", "samples": 4097}, "erase.samples: expected a number of sample blocks to read back, 0 to "
                                        "4096, found 4097"),
    ({"mode": "zero", "samples": True}, "erase.samples: expected a number of sample blocks to read back, 0 to "
                                        "4096, found true (a boolean)"),
    ({"mode": "zero", "sample": 3}, "erase.sample: expected one of the fields mode, method, samples, found "
                                    "unknown field (did you mean 'samples'?)"),
])
def test_spec_errors(value, message):
    with pytest.raises(TaskError) as exc:
        parse_erase(value)
    assert str(exc.value) == message


def test_spec_errors_name_the_field_where_the_task_put_it():
    with pytest.raises(TaskError) as exc:
        parse_erase({"mode": "zero", "method": "ata"}, "target.erase")
    assert (exc.value.field, exc.value.found) == ("target.erase.method", '"ata"')


# --- plan-time decisions ---------------------------------------------------------------------------

LOOP = EraseCaps(device="/dev/loop0", size=4 * GIB, interface="loop", discard=True, discard_max_bytes=4 * GIB,
                 discard_zeroes=True, discard_zeroes_reason="holes read as zeroes", write_zeroes=True,
                 write_zeroes_max_bytes=4 * GIB, secure_problem="/dev/loop0 is a loop device: it has no secure erase")
VIRTIO = EraseCaps(device="/dev/vda", size=GIB, interface="virtio",
                   secure_problem="/dev/vda is a virtio disk: the hypervisor offers no secure erase")
QEMU_NVME = EraseCaps(device="/dev/nvme0n1", size=64 * MIB, interface="nvme", discard=True,
                      discard_zeroes=True, discard_zeroes_reason="DLFEAT", nvme_controller="/dev/nvme0",
                      nvme_nsid=1, nvme_namespaces=1, nvme_format=True, nvme_deallocated_reads_zero=True)
SED_NVME = replace(QEMU_NVME, nvme_crypto_erase=True, nvme_sanitize=("crypto", "block"))
SSD = EraseCaps(device="/dev/sda", size=512 * GIB, interface="ata", discard=True, discard_zeroes=True,
                ata_security_supported=True, ata_enhanced_erase=True, ata_erase_minutes=2,
                ata_enhanced_erase_minutes=8)
QEMU_SATA = EraseCaps(device="/dev/sda", size=64 * MIB, interface="ata", discard=True, discard_zeroes=False,
                      discard_zeroes_reason='the drive does not report "Deterministic read ZEROs after TRIM"')


def test_metadata_plan_works_on_any_disk():
    assert check_erase(EraseSpec("metadata"), VIRTIO) == [
        "wipefs --all --force on each partition of /dev/vda, then on /dev/vda itself",
        "zero the first and last 4 MiB of /dev/vda and the first and last 1 MiB of each partition (MBR, both "
        "GPT headers and tables, MD, LVM, bcache)",
        "re-read the partition table (BLKRRPART) so that udev sees a blank disk",
        "verify: blkid -p and wipefs find no signature, the kernel lists no partition, the zeroed regions "
        "read back as zeroes",
    ]


def test_discard_refused_without_discard_support():
    with pytest.raises(EraseUnsupportedError) as exc:
        check_erase(EraseSpec("discard"), replace(QEMU_SATA, discard=False))
    assert str(exc.value) == ("discard: /dev/sda does not support discard (queue/discard_max_bytes is 0); "
                              "use mode zero instead")
    assert (exc.value.code, exc.value.exit_status) == ("erase.unsupported", 8)


def test_discard_plan_says_whether_the_data_is_checked():
    lines = check_erase(EraseSpec("discard"), LOOP)
    assert lines[0] == "discard all 4 GiB of /dev/loop0 (BLKDISCARD)"
    assert lines[-1].endswith("; 64 sample blocks of 64 KiB and the first and last MiB read as zeroes "
                              "(holes read as zeroes)")
    lines = check_erase(EraseSpec("discard"), QEMU_SATA)
    assert lines[-1].endswith('; data not checked: /dev/sda does not guarantee zeroes after discard (the drive '
                              'does not report "Deterministic read ZEROs after TRIM"): the data samples are not '
                              'checked, only the metadata erase that follows the discard')


def test_zero_plan_says_whether_it_is_offloaded():
    assert check_erase(EraseSpec("zero", samples=8), LOOP) == [
        "write zeroes over all 4 GiB of /dev/loop0 (BLKZEROOUT, offloaded to the device, up to 4 GiB per "
        "command; zero blocks are written instead if the ioctl is refused)",
        "re-read the partition table (BLKRRPART) so that udev sees a blank disk",
        "verify: blkid -p and wipefs find no signature, the kernel lists no partition, 8 sample blocks of 64 "
        "KiB and the first and last MiB read as zeroes",
    ]
    assert "the kernel writes zero pages: expect the disk's write speed" in \
        check_erase(EraseSpec("zero"), QEMU_SATA)[0]


@pytest.mark.parametrize(("caps", "method", "data"), [
    (QEMU_NVME, "nvme-format", "zero"),
    (replace(QEMU_NVME, nvme_deallocated_reads_zero=None), "nvme-format", "changed"),
    (SED_NVME, "nvme-format-crypto", "changed"),
    (replace(SED_NVME, nvme_format=False), "nvme-sanitize-crypto", "changed"),
    (replace(QEMU_NVME, nvme_format=False, nvme_sanitize=("block", "overwrite")), "nvme-sanitize-block", "zero"),
    (SSD, "ata-enhanced", "changed"),
    (replace(SSD, ata_enhanced_erase=False), "ata", "zero"),
])
def test_auto_prefers(caps, method, data):
    assert choose_secure("auto", caps) == method
    assert expected_data("secure", method, caps).data == data


def test_auto_never_picks_overwrite():
    caps = replace(QEMU_NVME, nvme_format=False, nvme_sanitize=("overwrite",))
    with pytest.raises(EraseUnsupportedError):
        choose_secure("auto", caps)
    assert choose_secure("nvme-sanitize-overwrite", caps) == "nvme-sanitize-overwrite"


def test_secure_methods_say_why_not():
    assert secure_methods(QEMU_NVME) == {
        "nvme-format-crypto": "/dev/nvme0 does not support cryptographic erase in Format NVM (FNA bit 2 is clear)",
        "nvme-format": None,
        "nvme-sanitize-crypto": "/dev/nvme0 does not support sanitize crypto erase (SANICAP)",
        "nvme-sanitize-block": "/dev/nvme0 does not support sanitize block erase (SANICAP)",
        "nvme-sanitize-overwrite": "/dev/nvme0 does not support sanitize overwrite erase (SANICAP)",
        "ata-enhanced": "/dev/nvme0n1 is not an ATA drive",
        "ata": "/dev/nvme0n1 is not an ATA drive",
    }


def test_secure_plan_lines():
    assert check_erase(EraseSpec("secure"), QEMU_NVME) == [
        "NVMe Format NVM with Secure Erase Setting 1 (user data erase) of namespace 1 on /dev/nvme0 (nvme "
        "format /dev/nvme0n1), keeping the LBA format",
        "re-read the partition table (BLKRRPART)",
        "verify: blkid -p and wipefs find no signature, the kernel lists no partition, 64 sample blocks of 64 "
        "KiB and the first and last MiB read as zeroes (the namespace reports that deallocated blocks read as "
        "zeroes (DLFEAT))",
    ]
    assert check_erase(EraseSpec("secure"), SSD)[0] == (
        "ATA SECURITY ERASE UNIT (enhanced) of /dev/sda through hdparm: set the temporary user password "
        "'peagent', erase; the drive estimates 8 min, then check that the password is cleared")
    assert check_erase(EraseSpec("secure", "nvme-sanitize-block"), replace(SED_NVME))[0] == (
        "NVMe Sanitize, block erase, on /dev/nvme0 (nvme sanitize), waiting for it to complete (nvme "
        "sanitize-log)")
    assert "every 4 KiB block of 64 sample blocks" in check_erase(EraseSpec("secure"), SED_NVME)[-1]


def test_secure_plan_warns_about_a_password_already_set():
    lines = check_erase(EraseSpec("secure"), replace(SSD, ata_security_enabled=True, ata_security_locked=True))
    assert lines[0] == ("/dev/sda already has a security password set (locked: yes): unlock it with 'peagent', "
                        "which an interrupted erase leaves; any other password makes the erase fail")


FROZEN = ("secure: /dev/sda supports no secure erase: /dev/sda: the drive's security is frozen (the firmware "
          "froze it at power-on, as most do); suspend the machine to RAM and resume it (rtcwake -m mem -s 10), "
          "or unplug and re-plug the drive while the machine runs (hot-plug), then run the erase again; use "
          "mode zero (or discard) instead")


@pytest.mark.parametrize(("spec", "caps", "message"), [
    (EraseSpec("secure"), replace(SSD, ata_security_frozen=True), FROZEN),
    (EraseSpec("secure"), QEMU_SATA,
     "secure: /dev/sda supports no secure erase: /dev/sda does not implement the ATA Security feature set "
     "(hdparm -I shows no security support); use mode zero (or discard) instead"),
    (EraseSpec("secure"), replace(SSD, ata_security_count_expired=True),
     "secure: /dev/sda supports no secure erase: /dev/sda: too many wrong security passwords were tried "
     "(security count expired); power-cycle the drive, then run the erase again; use mode zero (or discard) "
     "instead"),
    (EraseSpec("secure"), VIRTIO,
     "secure: /dev/vda is a virtio disk: the hypervisor offers no secure erase; use mode zero (or discard) "
     "instead"),
    (EraseSpec("secure"), replace(VIRTIO, device="/dev/sdb", interface="usb",
                                  secure_problem="/dev/sdb is behind a USB bridge"),
     "secure: /dev/sdb is behind a USB bridge; use mode zero (or discard) instead"),
    (EraseSpec("secure"), replace(QEMU_NVME, nvme_format=False),
     "secure: /dev/nvme0n1 supports no secure erase: /dev/nvme0 does not support Format NVM (OACS bit 1 is "
     "clear); /dev/nvme0 does not support sanitize crypto erase (SANICAP); /dev/nvme0 does not support "
     "sanitize block erase (SANICAP); /dev/nvme0 does not support sanitize overwrite erase (SANICAP); use mode "
     "zero (or discard) instead"),
    (EraseSpec("secure"), replace(SED_NVME, nvme_namespaces=2, nvme_format_all_namespaces=True),
     "secure: /dev/nvme0n1 supports no secure erase: a secure format on /dev/nvme0 applies to all its 2 "
     "namespaces (FNA): it would erase the other namespaces too; a sanitize erases every namespace of "
     "/dev/nvme0, and it has 2: it would erase the other namespaces too; /dev/nvme0 does not support sanitize "
     "overwrite erase (SANICAP); use mode zero (or discard) instead"),
    (EraseSpec("secure", "nvme-format"), SSD, "secure: nvme-format is not possible: /dev/sda is not an NVMe "
                                              "namespace"),
    (EraseSpec("secure", "ata-enhanced"), replace(SSD, ata_enhanced_erase=False),
     "secure: ata-enhanced is not possible: the drive does not support enhanced security erase"),
    (EraseSpec("secure", "ata"), replace(SSD, secure_problem="hdparm is not installed in this PE"),
     "secure: ata is not possible: hdparm is not installed in this PE"),
])
def test_secure_refusals(spec, caps, message):
    with pytest.raises(EraseUnsupportedError) as exc:
        check_erase(spec, caps)
    assert str(exc.value) == message


def test_a_second_namespace_does_not_matter_when_the_format_is_per_namespace():
    assert choose_secure("auto", replace(SED_NVME, nvme_namespaces=2)) == "nvme-format-crypto"


# --- regions and samples -----------------------------------------------------------------------------


def test_metadata_regions_cover_both_ends_of_the_disk_and_of_each_partition():
    parts = [(1 * MIB, 16 * MIB), (17 * MIB, 16 * MIB), (33 * MIB, 30 * MIB)]
    assert metadata_regions(64 * MIB, parts) == [
        (0, 4 * MIB),  # disk start; partition 1's start is inside it
        (16 * MIB, 2 * MIB),  # end of partition 1, start of partition 2
        (32 * MIB, 2 * MIB),  # end of 2, start of 3
        (60 * MIB, 4 * MIB),  # disk end, with partition 3's end and the backup GPT
    ]


def test_progress_total():
    parts = [(1 * MIB, 16 * MIB), (17 * MIB, 16 * MIB), (33 * MIB, 30 * MIB)]
    assert progress_total(EraseSpec("metadata"), 64 * MIB, parts) == 12 * MIB
    assert progress_total(EraseSpec("metadata"), 64 * MIB) == 8 * MIB
    assert progress_total(EraseSpec("zero"), 64 * MIB, parts) == 64 * MIB


def test_metadata_regions_are_clipped_and_aligned():
    assert metadata_regions(3 * MIB, []) == [(0, 3 * MIB)]
    # a partition table listing a partition beyond the end of the disk, and unaligned numbers
    assert metadata_regions(64 * MIB, [(40 * MIB + 100, 100 * MIB)]) == [
        (0, 4 * MIB), (40 * MIB, MIB + 512), (60 * MIB, 4 * MIB)]


def test_sample_positions_are_deterministic_and_spread():
    size = 4 * GIB + 512  # not a multiple of 4 KiB, as disks with an odd sector count are
    regions = sample_positions(size, 64)
    assert regions == sample_positions(size, 64)
    assert regions[0] == (0, MIB) and regions[-1] == (size - MIB, MIB)
    middle = regions[1:-1]
    assert len(middle) == 62 and all(o % 4096 == 0 and n == 64 * 1024 for o, n in middle)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(middle)]
    assert max(gaps) - min(gaps) <= 4096  # evenly spread, up to the alignment


def test_sample_positions_on_small_disks_and_counts():
    assert sample_positions(64 * MIB, 0) == [(0, MIB), (63 * MIB, MIB)]
    assert sample_positions(64 * MIB, 1) == [(0, MIB), (32 * MIB - 32768, 65536), (63 * MIB, MIB)]
    assert sample_positions(MIB + 512, 64) == [(0, MIB + 512)]
    assert sample_positions(100 * 1024, 2) == [(0, 100 * 1024)]


# --- zeroing ----------------------------------------------------------------------------------------


def test_zero_range_falls_back_to_writes_where_blkzeroout_is_refused(tmp_path):
    # BLKZEROOUT on a regular file fails with ENOTTY: the same path as a device that refuses it.
    path = tmp_path / "disk.img"
    path.write_bytes(b"\xab" * (3 * MIB))
    seen = []
    with open(path, "r+b") as f:
        how = zero_range(f.fileno(), MIB, MIB + 4096, seen.append, chunk=MIB)
    data = path.read_bytes()
    assert how == "write"
    assert data[:MIB] == b"\xab" * MIB and data[MIB:2 * MIB + 4096].count(0) == MIB + 4096
    assert data[2 * MIB + 4096:] == b"\xab" * (MIB - 4096)
    assert seen == [MIB, 4096]


# --- erase() on a regular file, with scripted tools ------------------------------------------------


def disk_file(tmp_path, size=16 * MIB, fill=b"\x5a"):
    path = tmp_path / "disk.img"
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(fill * MIB)
    return path


def clean_tools(more: dict | None = None) -> FakeRunner:
    """wipefs and blkid as on a disk where nothing (more) is found, plus the ``more`` answers."""
    return FakeRunner({("wipefs", "--all"): ok(), ("wipefs", "--json"): ok(""),
                       ("blkid", "-p"): ToolResult((), 2), ("udevadm",): ok(), **(more or {})})


def caps_for(path, **fields):
    return EraseCaps(**{"device": str(path), "size": os.path.getsize(path), "interface": "virtio", **fields})


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_zero_erase_of_a_file(tmp_path):
    path = disk_file(tmp_path)
    seen = []
    report = erase(str(path), EraseSpec("zero", samples=8), caps_for(path), seen.append, runner=clean_tools())
    assert path.read_bytes().count(0) == 16 * MIB
    assert (report.mode, report.method, report.bytes, sum(seen)) == ("zero", "write", 16 * MIB, 16 * MIB)
    assert report.verified == (
        f"blkid -p and wipefs find no signature on {path}",
        "the samples (2.4 MiB: 8 blocks of 64 KiB spread over the disk, the first and last MiB) read as zeroes",
    )
    assert report.notes == (f"BLKZEROOUT was refused on {path}: zeroes were written instead (write)",)


def test_metadata_erase_of_a_file_zeroes_the_ends_and_keeps_the_middle(tmp_path):
    path = disk_file(tmp_path)
    runner = clean_tools({("wipefs", "--all"): ok(f"{path}: 8 bytes were erased at offset 0x00000200 (gpt): "
                                                     "45 46 49 20 50 41 52 54\n")})
    report = erase(str(path), EraseSpec("metadata"), caps_for(path), runner=runner)
    data = path.read_bytes()
    assert data[:4 * MIB].count(0) == 4 * MIB and data[-4 * MIB:].count(0) == 4 * MIB
    assert data[4 * MIB:-4 * MIB] == b"\x5a" * (8 * MIB)
    assert runner.commands("wipefs", "--all") == [("wipefs", "--all", "--force", str(path))]
    assert report.steps[0] == f"wipefs --all --force on 0 partition(s) and on {path}: gpt on disk.img at 0x00000200"
    assert report.bytes == 8 * MIB
    assert report.notes == ("data not verified: metadata mode leaves the data between the zeroed regions",)


def test_a_signature_left_behind_fails_the_verification(tmp_path):
    path = disk_file(tmp_path)
    runner = clean_tools({("blkid", "-p"): ok("DEVNAME=x\nTYPE=ext4\n")})
    with pytest.raises(EraseVerifyError) as exc:
        erase(str(path), EraseSpec("zero"), caps_for(path), runner=runner)
    assert str(exc.value) == f"zero: signatures remain on {path} after the erase: ext4 (blkid -p)"
    assert (exc.value.code, exc.value.exit_status) == ("erase.verify", 8)


def test_unsupported_mode_is_refused_before_anything_is_written(tmp_path):
    path = disk_file(tmp_path)
    before = digest(path)
    runner = clean_tools()
    with pytest.raises(EraseUnsupportedError):
        erase(str(path), EraseSpec("discard"), caps_for(path), runner=runner)
    with pytest.raises(EraseUnsupportedError):
        erase(str(path), EraseSpec("secure"), caps_for(path, secure_problem="no"), runner=runner)
    assert digest(path) == before and runner.calls == []


def test_caps_of_another_disk_are_refused(tmp_path):
    path = disk_file(tmp_path)
    with pytest.raises(EraseError, match="the capabilities given are those of /dev/sdz"):
        erase(str(path), EraseSpec("zero"), caps_for(path, device="/dev/sdz"), runner=clean_tools())


# secure erase with scripted drives


def nvme_caps(path, **more):
    return caps_for(path, **{"interface": "nvme", "nvme_controller": "/dev/nvme0", "nvme_nsid": 1,
                             "nvme_namespaces": 1, "nvme_format": True, "nvme_deallocated_reads_zero": True,
                             **more})


def overwrite(path, data_for_block):
    def run(argv):
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            for off in range(0, size, MIB):
                f.write(data_for_block(off))
        return ToolResult(argv, 0, "Success formatting namespace:1\n")
    return run


def test_nvme_format_user_data_erase(tmp_path):
    path = disk_file(tmp_path)
    runner = clean_tools({("nvme", "format"): overwrite(path, lambda off: bytes(MIB))})
    seen = []
    report = erase(str(path), EraseSpec("secure"), nvme_caps(path), seen.append, runner=runner)
    assert runner.commands("nvme") == [("nvme", "format", str(path), "--namespace-id=1", "--ses=1", "--force",
                                        "--timeout=10800000")]
    assert (report.method, sum(seen)) == ("nvme-format", 16 * MIB)
    assert report.verified[-1].endswith("read as zeroes")


def test_crypto_erase_is_verified_by_change_not_zeroes(tmp_path):
    path = disk_file(tmp_path)
    runner = clean_tools({("nvme", "format"): overwrite(path, lambda off: os.urandom(MIB))})
    report = erase(str(path), EraseSpec("secure"), nvme_caps(path, nvme_crypto_erase=True), runner=runner)
    assert runner.commands("nvme")[0][4] == "--ses=2"
    assert report.verified[-1] == ("every sampled 4 KiB block that held data before now reads differently (1408 "
                                   "blocks, of 5.5 MiB sampled; a cryptographic erase leaves unreadable data, "
                                   "not zeroes)")


def test_a_format_that_changed_nothing_fails_the_verification(tmp_path):
    path = disk_file(tmp_path)
    runner = clean_tools({("nvme", "format"): ok("Success formatting namespace:1\n")})
    with pytest.raises(EraseVerifyError, match=r"secure: 1408 of the 1408 sampled 4 KiB blocks .* still hold"):
        erase(str(path), EraseSpec("secure"), nvme_caps(path, nvme_crypto_erase=True), runner=runner)
    with pytest.raises(EraseVerifyError, match=r"secure: 1408 sampled 4 KiB block\(s\) .* are not zero"):
        erase(str(path), EraseSpec("secure"), nvme_caps(path), runner=runner)


def sanitize_log(status: int, sprog: int) -> ToolResult:
    # nvme-cli 2.3's JSON shape: {"<dev>": {"sprog": .., "sstat": {.., "status": "(N) text"}, ..}}
    doc = {"nvme0": {"sprog": sprog, "sstat": {"global_erased": 0, "no_cmplted_passes": 0,
                                                "status": f"({status}) sanitize state"}, "cdw10_info": 0}}
    return ok(json.dumps(doc))


def test_nvme_sanitize_is_polled_until_done(tmp_path, monkeypatch):
    path = disk_file(tmp_path)
    logs = iter([sanitize_log(0, 65535), sanitize_log(2, 16384), sanitize_log(2, 49152), sanitize_log(1, 65535)])
    monkeypatch.setattr(erase_module.time, "sleep", lambda s: None)
    sanitize = overwrite(path, lambda off: bytes(MIB))
    runner = clean_tools({("nvme", "sanitize-log"): lambda argv: next(logs), ("nvme", "sanitize"): sanitize})
    seen = []
    caps = nvme_caps(path, nvme_format=False, nvme_sanitize=("block",))
    report = erase(str(path), EraseSpec("secure"), caps, seen.append, runner=runner)
    assert runner.commands("nvme", "sanitize") == [("nvme", "sanitize", "/dev/nvme0", "--sanact=2")]
    assert report.method == "nvme-sanitize-block"
    assert seen == [4 * MIB, 8 * MIB, 4 * MIB]


def test_a_sanitize_in_progress_is_waited_for_not_restarted(tmp_path, monkeypatch):
    path = disk_file(tmp_path, fill=b"\0")
    logs = iter([sanitize_log(2, 30000), sanitize_log(4, 65535)])
    monkeypatch.setattr(erase_module.time, "sleep", lambda s: None)
    runner = clean_tools({("nvme", "sanitize-log"): lambda argv: next(logs)})
    caps = nvme_caps(path, nvme_format=False, nvme_sanitize=("crypto",))
    report = erase(str(path), EraseSpec("secure"), caps, runner=runner)
    assert runner.commands("nvme", "sanitize") == []
    assert report.steps[0] == "a sanitize was already in progress on /dev/nvme0: waited for it instead of starting one"
    assert "no sampled block held data before the erase: the read-back could not show a change" in report.notes


def test_a_failed_sanitize(tmp_path, monkeypatch):
    path = disk_file(tmp_path)
    logs = iter([sanitize_log(0, 0), sanitize_log(3, 0)])
    runner = clean_tools({("nvme", "sanitize-log"): lambda argv: next(logs), ("nvme", "sanitize"): ok()})
    with pytest.raises(EraseError, match="NVMe Sanitize of /dev/nvme0 failed: the controller stays in its "
                                         "sanitize failure mode"):
        erase(str(path), EraseSpec("secure"), nvme_caps(path, nvme_format=False, nvme_sanitize=("block",)),
              runner=runner)


@pytest.mark.parametrize(("text", "expected"), [
    ('{"nvme0": {"sprog": 32768, "sstat": 2, "cdw10_info": 0}}', (2, 0.5)),
    ('{"nvme0": {"sprog": 65535, "sstat": {"status": "(1) Most Recent Sanitize Command Completed '
     'Successfully."}}}', (1, 65535 / 65536)),
    # a version that used the status text as the key
    ('{"nvme0": {"sprog": 0, "sstat": {"(0) The NVM subsystem has never been sanitized.": "(0) x"}}}', (0, 0.0)),
    ('{"sprog": 10, "sstat": 4}', (4, 10 / 65536)),
])
def test_sanitize_log_shapes(text, expected):
    assert parse_sanitize_log(text) == expected


class AtaDrive:
    """hdparm answering for a scripted ATA drive whose security state evolves like a real one."""

    def __init__(self, path, *, accepts_password=True, erases=True, enabled=False, locked=False, frozen=False):
        self.path, self.accepts_password, self.erases = path, accepts_password, erases
        self.enabled, self.locked, self.frozen = enabled, locked, frozen

    def identify(self) -> str:
        text = fixture("ssd-hdparm-I-security.txt")
        for name in ("enabled", "locked", "frozen"):
            if getattr(self, name):
                text = text.replace(f"\tnot\t{name}\n", f"\t\t{name}\n")
        return text

    def __call__(self, argv):
        args = argv[3:] if argv[1] == "--user-master" else argv[1:]
        if args[0] == "-I":
            return ToolResult(argv, 0, self.identify())
        if args[0] == "--security-set-pass" and self.accepts_password:
            self.enabled = True
        elif args[0] == "--security-unlock" and args[1] == ATA_PASSWORD:
            self.locked = False
        elif args[0].startswith("--security-erase") and self.erases and self.enabled and not self.locked:
            overwrite(self.path, lambda off: bytes(MIB))(argv)
            self.enabled = False
        elif args[0] == "--security-disable" and not self.locked:
            self.enabled = False
        return ToolResult(argv, 0, "")  # hdparm's status says nothing: it is 0 even when the drive aborts


def ata_caps(path, **more):
    return caps_for(path, interface="ata", ata_security_supported=True, **more)


def test_ata_security_erase(tmp_path):
    path = disk_file(tmp_path)
    drive = AtaDrive(path)
    runner = clean_tools({("hdparm",): drive})
    report = erase(str(path), EraseSpec("secure"), ata_caps(path), runner=runner)
    erased = [c[3:5] for c in runner.commands("hdparm", "--user-master")]
    assert erased == [("--security-set-pass", "peagent"), ("--security-erase", "peagent")]
    assert report.method == "ata" and not drive.enabled
    assert report.steps[-1] == f"ATA SECURITY ERASE UNIT of {path} (hdparm); the drive cleared the temporary password"
    assert report.verified[-1].endswith("read as zeroes")


def test_ata_drive_that_aborts_set_password_like_qemu(tmp_path):
    path = disk_file(tmp_path)
    runner = clean_tools({("hdparm",): AtaDrive(path, accepts_password=False)})
    with pytest.raises(EraseError) as exc:
        erase(str(path), EraseSpec("secure"), ata_caps(path), runner=runner)
    assert str(exc.value) == (f"{path} refused the temporary security password (SECURITY SET PASSWORD was "
                              "aborted): the drive cannot be security-erased")
    assert path.read_bytes()[:4] == b"\x5a" * 4


def test_ata_erase_that_does_not_complete_removes_the_password_again(tmp_path):
    path = disk_file(tmp_path)
    drive = AtaDrive(path, erases=False)
    runner = clean_tools({("hdparm",): drive})
    with pytest.raises(EraseError, match=r"ATA SECURITY ERASE UNIT of .* did not complete"):
        erase(str(path), EraseSpec("secure"), ata_caps(path), runner=runner)
    assert runner.commands("hdparm", "--user-master")[-1][3] == "--security-disable" and not drive.enabled


def test_ata_drive_left_locked_by_an_interrupted_erase_is_unlocked_and_erased(tmp_path):
    path = disk_file(tmp_path)
    drive = AtaDrive(path, enabled=True, locked=True)
    runner = clean_tools({("hdparm",): drive})
    caps = ata_caps(path, ata_security_enabled=True, ata_security_locked=True)
    report = erase(str(path), EraseSpec("secure", "ata"), caps, runner=runner)
    assert [c[3] for c in runner.commands("hdparm", "--user-master")] == ["--security-unlock", "--security-erase"]
    assert report.steps[0].startswith(f"{path} already had a security password set")


def test_ata_drive_frozen_since_the_plan_is_not_touched(tmp_path):
    path = disk_file(tmp_path)
    runner = clean_tools({("hdparm",): AtaDrive(path, frozen=True)})
    with pytest.raises(EraseUnsupportedError, match="security is frozen"):
        erase(str(path), EraseSpec("secure"), ata_caps(path), runner=runner)
    assert runner.commands("hdparm", "--user-master") == []


def test_signatures_lists_what_wipefs_finds():
    wipefs = {"signatures": [{"device": "sda", "offset": "0x438", "type": "ext4", "uuid": "x", "label": None}]}
    runner = FakeRunner({("wipefs", "--json"): ok(json.dumps(wipefs)), ("blkid", "-p"): ok("TYPE=ext4\n")})
    assert signatures("/dev/sda", runner) == ["ext4 at 0x438 (wipefs)", "ext4 (blkid -p)"]
    with pytest.raises(EraseError, match="blkid is not installed"):
        signatures("/dev/sda", FakeRunner({("wipefs", "--json"): ok("")}))
