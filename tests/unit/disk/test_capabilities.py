"""Erase capabilities: parsing captured nvme-cli and hdparm outputs, and probing fake sysfs trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peagent.disk.capabilities import (
    AtaSecurity,
    EraseCaps,
    NvmeController,
    discard_zeroes,
    interface_of,
    parse_hdparm_identify,
    parse_nvme_id_ctrl,
    parse_nvme_id_ns,
    probe,
)
from tests.unit.disk.fakes import FakeRunner, fail, fixture, ok

SSD = fixture("ssd-hdparm-I-security.txt")


def ssd_variant(**flags: bool) -> str:
    """The SSD's hdparm -I with security bits flipped: frozen=True prints "\t\tfrozen"."""
    text = SSD
    for name, value in flags.items():
        label = {"count_expired": "expired: security count"}.get(name, name)
        text = text.replace(f"\tnot\t{label}\n", f"\t\t{label}\n") if value else \
            text.replace(f"\t\t{label}\n", f"\tnot\t{label}\n")
    return text


# --- nvme id-ctrl / id-ns ---------------------------------------------------------------------


def test_qemu_nvme_controller_formats_but_has_no_crypto_erase_or_sanitize():
    assert parse_nvme_id_ctrl(fixture("qemu-7.2-nvme-id-ctrl.json")) == NvmeController(
        format=True, format_all_namespaces=False, secure_erase_all_namespaces=False, crypto_erase=False,
        sanitize=(), model="QEMU NVMe Ctrl", serial="NVME0001")


def test_nvme_controller_with_crypto_erase_and_sanitize():
    info = parse_nvme_id_ctrl(fixture("nvme-id-ctrl-crypto-sanitize.json"))
    assert (info.format, info.crypto_erase, info.sanitize) == (True, True, ("crypto", "block"))


@pytest.mark.parametrize(("fna", "sanicap", "expected"), [
    (0b001, 0b100, (True, False, False, ("overwrite",))),
    (0b010, 0b111, (False, True, False, ("crypto", "block", "overwrite"))),
    (0b111, 0, (True, True, True, ())),
    # SANICAP's high bits (NDI, NODMMAS) are not erase kinds
    (0, 0x60000002, (False, False, False, ("block",))),
])
def test_nvme_fna_and_sanicap_bits(fna, sanicap, expected):
    doc = json.loads(fixture("qemu-7.2-nvme-id-ctrl.json"))
    doc.update(fna=fna, sanicap=sanicap)
    info = parse_nvme_id_ctrl(json.dumps(doc))
    assert (info.format_all_namespaces, info.secure_erase_all_namespaces, info.crypto_erase,
            info.sanitize) == expected


def test_nvme_without_format_support():
    doc = json.loads(fixture("qemu-7.2-nvme-id-ctrl.json"))
    doc["oacs"] = 0x108
    assert parse_nvme_id_ctrl(json.dumps(doc)).format is False


@pytest.mark.parametrize(("text", "message"), [
    ("NVMe status: Invalid Field in Command", "nvme id-ctrl printed no JSON"),
    ("[1, 2]", "nvme id-ctrl printed JSON that is not an object"),
    ('{"oacs": 266, "fna": 0}', "nvme id-ctrl JSON has no integer field 'sanicap'"),
    ('{"oacs": 266, "fna": "0", "sanicap": 0}', "nvme id-ctrl JSON has no integer field 'fna'"),
])
def test_nvme_id_ctrl_that_is_not_one(text, message):
    with pytest.raises(ValueError, match=message):
        parse_nvme_id_ctrl(text)


@pytest.mark.parametrize(("dlfeat", "zeroes"), [(1, True), (9, True), (0, False), (2, False), (0x19, True)])
def test_nvme_dlfeat(dlfeat, zeroes):
    doc = json.loads(fixture("qemu-7.2-nvme-id-ns.json"))
    doc["dlfeat"] = dlfeat
    assert parse_nvme_id_ns(json.dumps(doc)) is zeroes


def test_qemu_namespace_reads_zeroes_after_deallocate():
    assert parse_nvme_id_ns(fixture("qemu-7.2-nvme-id-ns.json")) is True


# --- hdparm -I -----------------------------------------------------------------------------------


def test_qemu_ide_drive_has_no_security_feature_set():
    assert parse_hdparm_identify(fixture("qemu-7.2-ide-hdparm-I.txt")) == AtaSecurity(model="QEMU HARDDISK")


def test_ssd_security_and_trim():
    assert parse_hdparm_identify(SSD) == AtaSecurity(
        supported=True, enabled=False, locked=False, frozen=False, count_expired=False, enhanced_erase=True,
        erase_minutes=2, enhanced_erase_minutes=8, trim=True, trim_reads_zero=True,
        model="PEAGENT TEST SSD 512GB")


def test_frozen_drive():
    sec = parse_hdparm_identify(ssd_variant(frozen=True))
    assert (sec.supported, sec.frozen, sec.enabled) == (True, True, False)


def test_drive_left_locked_with_a_password():
    text = ssd_variant(enabled=True, locked=True).replace(
        "\t\tsupported: enhanced erase\n", "\t\tsupported: enhanced erase\n\tSecurity level high\n")
    sec = parse_hdparm_identify(text)
    assert (sec.enabled, sec.locked, sec.frozen, sec.enhanced_erase) == (True, True, False, True)


def test_security_count_expired():
    assert parse_hdparm_identify(ssd_variant(count_expired=True)).count_expired is True


def test_normal_erase_only_and_long_estimates():
    text = ssd_variant(**{"supported: enhanced erase": False}).replace(
        "\t2min for SECURITY ERASE UNIT. 8min for ENHANCED SECURITY ERASE UNIT.",
        "\tmore than 508min for SECURITY ERASE UNIT.")
    sec = parse_hdparm_identify(text)
    assert (sec.enhanced_erase, sec.erase_minutes, sec.enhanced_erase_minutes) == (False, 508, None)


def test_supported_bit_clear_is_printed_with_a_question_mark():
    # hdparm prints "(?)" rather than "not" for word 128 bit 0.
    text = SSD.replace("\t\tsupported\n", "\t(?)\tsupported\n")
    assert parse_hdparm_identify(text).supported is False


def test_trim_without_deterministic_zeroes():
    text = SSD.replace("\t   *\tDeterministic read ZEROs after TRIM\n", "")
    sec = parse_hdparm_identify(text)
    assert (sec.trim, sec.trim_reads_zero) == (True, False)


def test_output_that_is_not_an_ata_identify():
    with pytest.raises(ValueError, match='hdparm -I printed no ATA identify data'):
        parse_hdparm_identify("\n/dev/vda:\n SG_IO: bad/missing sense data\n")


# --- discard zeroes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("interface", "discard", "nvme", "ata", "expected"), [
    ("loop", True, None, None, True),
    ("nvme", True, True, None, True),
    ("nvme", True, False, None, False),
    ("nvme", True, None, None, None),
    ("ata", True, None, AtaSecurity(trim=True, trim_reads_zero=True), True),
    ("ata", True, None, AtaSecurity(trim=True), False),
    ("virtio", True, None, None, None),
    ("scsi", True, None, None, None),
    ("nvme", False, True, None, None),
])
def test_discard_zeroes(interface, discard, nvme, ata, expected):
    value, why = discard_zeroes(interface, discard, nvme, ata)
    assert value is expected and why


# --- probing fake sysfs trees ------------------------------------------------------------------------


def make_disk(root: Path, devpath: str, *, size_sectors: int = 2048, discard: int = 0, write_zeroes: int = 0,
              vendor: str | None = None, device_link: str | None = None, nsid: int | None = None) -> Path:
    """A block device's sysfs directory at root/devpath, and /sys/class/block/NAME pointing to it."""
    d = root / devpath
    (d / "queue").mkdir(parents=True)
    (d / "size").write_text(f"{size_sectors}\n")
    (d / "queue/logical_block_size").write_text("512\n")
    (d / "queue/discard_max_bytes").write_text(f"{discard}\n")
    (d / "queue/discard_granularity").write_text("512\n")
    (d / "queue/write_zeroes_max_bytes").write_text(f"{write_zeroes}\n")
    if nsid is not None:
        (d / "nsid").write_text(f"{nsid}\n")
    if device_link is not None:
        (d / "device").symlink_to(device_link)
    if vendor is not None:
        (d / "device").resolve().mkdir(parents=True, exist_ok=True)
        (d / "device/vendor").write_text(vendor)
    link = root / "class/block" / d.name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(d)
    return link


NVME_PATH = "devices/pci0000:00/0000:00:02.0/nvme/nvme0/nvme0n1"


def nvme_runner() -> FakeRunner:
    return FakeRunner({
        ("nvme", "id-ctrl", "/dev/nvme0"): ok(fixture("qemu-7.2-nvme-id-ctrl.json")),
        ("nvme", "id-ns", "/dev/nvme0n1"): ok(fixture("qemu-7.2-nvme-id-ns.json")),
    })


def test_probe_qemu_nvme_namespace(tmp_path):
    sys_dir = make_disk(tmp_path, NVME_PATH, size_sectors=196608, discard=2147483136, write_zeroes=524288,
                        device_link="../../nvme0", nsid=1)
    runner = nvme_runner()
    caps = probe("/dev/nvme0n1", str(sys_dir), runner)
    assert caps == EraseCaps(
        device="/dev/nvme0n1", size=96 << 20, interface="nvme", discard=True, discard_max_bytes=2147483136,
        discard_granularity=512, discard_zeroes=True,
        discard_zeroes_reason="the namespace reports that deallocated blocks read as zeroes (DLFEAT)",
        write_zeroes=True, write_zeroes_max_bytes=524288, nvme_controller="/dev/nvme0", nvme_nsid=1,
        nvme_namespaces=1, nvme_format=True, nvme_deallocated_reads_zero=True)
    assert runner.calls == [("nvme", "id-ctrl", "/dev/nvme0", "-o", "json"),
                            ("nvme", "id-ns", "/dev/nvme0n1", "-o", "json")]


def test_probe_counts_the_controllers_other_namespaces(tmp_path):
    sys_dir = make_disk(tmp_path, NVME_PATH, device_link="../../nvme0", nsid=1)
    (tmp_path / "devices/pci0000:00/0000:00:02.0/nvme/nvme0/nvme0n2").mkdir()
    caps = probe("/dev/nvme0n1", str(sys_dir), nvme_runner())
    assert caps.nvme_namespaces == 2


def test_probe_nvme_multipath_head_finds_its_controller(tmp_path):
    # Native NVMe multipath: the namespace head lives under the subsystem, its paths under controllers.
    head = "devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"
    (tmp_path / "devices/pci0000:00/0000:00:02.0/nvme/nvme0/nvme0c0n1").mkdir(parents=True)
    (tmp_path / "devices/virtual/nvme-subsystem/nvme-subsys0").mkdir(parents=True)
    (tmp_path / "devices/virtual/nvme-subsystem/nvme-subsys0/nvme0").symlink_to(
        tmp_path / "devices/pci0000:00/0000:00:02.0/nvme/nvme0")
    sys_dir = make_disk(tmp_path, head, device_link="../../nvme-subsys0", nsid=1)
    caps = probe("/dev/nvme0n1", str(sys_dir), nvme_runner())
    assert (caps.nvme_controller, caps.nvme_namespaces, caps.nvme_format) == ("/dev/nvme0", 1, True)


def test_probe_nvme_without_nvme_cli(tmp_path):
    sys_dir = make_disk(tmp_path, NVME_PATH, discard=1 << 30, device_link="../../nvme0", nsid=1)
    caps = probe("/dev/nvme0n1", str(sys_dir), FakeRunner())
    assert caps.secure_problem == "nvme-cli is not installed in this PE: NVMe Format and Sanitize are unavailable"
    assert (caps.nvme_format, caps.discard, caps.discard_zeroes) == (False, True, None)


def test_probe_nvme_whose_identify_fails(tmp_path):
    sys_dir = make_disk(tmp_path, NVME_PATH, device_link="../../nvme0", nsid=1)
    runner = nvme_runner()
    runner.answers[("nvme", "id-ctrl", "/dev/nvme0")] = fail(1, "NVMe status: Internal Error(0x6)")
    caps = probe("/dev/nvme0n1", str(sys_dir), runner)
    assert caps.secure_problem == ("the NVMe controller could not be identified: nvme id-ctrl /dev/nvme0 -o json "
                                   "failed (status 1): NVMe status: Internal Error(0x6)")


SATA_PATH = "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda"


def test_probe_qemu_sata_disk(tmp_path):
    sys_dir = make_disk(tmp_path, SATA_PATH, size_sectors=131072, discard=2147450880,
                        device_link="../../../0:0:0:0", vendor="ATA     \n")
    runner = FakeRunner({("hdparm", "-I"): ok(fixture("qemu-7.2-ide-hdparm-I.txt"))})
    caps = probe("/dev/sda", str(sys_dir), runner)
    assert (caps.interface, caps.size, caps.ata_security_supported, caps.secure_problem) == \
        ("ata", 64 << 20, False, None)
    assert (caps.discard, caps.discard_zeroes, caps.write_zeroes) == (True, False, False)
    assert runner.calls == [("hdparm", "-I", "/dev/sda")]


def test_probe_sata_ssd(tmp_path):
    sys_dir = make_disk(tmp_path, SATA_PATH, discard=1 << 31, device_link="../../../0:0:0:0",
                        vendor="ATA     \n")
    caps = probe("/dev/sda", str(sys_dir), FakeRunner({("hdparm", "-I"): ok(SSD)}))
    assert (caps.ata_security_supported, caps.ata_enhanced_erase, caps.ata_erase_minutes,
            caps.ata_enhanced_erase_minutes, caps.discard_zeroes) == (True, True, 2, 8, True)


def test_probe_sata_without_hdparm(tmp_path):
    sys_dir = make_disk(tmp_path, SATA_PATH, device_link="../../../0:0:0:0", vendor="ATA     \n")
    caps = probe("/dev/sda", str(sys_dir), FakeRunner())
    assert caps.secure_problem == "hdparm is not installed in this PE: ATA security erase is unavailable"


def test_probe_never_sends_anything_to_a_usb_disk(tmp_path):
    path = "devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host4/target4:0:0/4:0:0:0/block/sdb"
    sys_dir = make_disk(tmp_path, path, device_link="../../../4:0:0:0", vendor="ATA     \n")
    runner = FakeRunner({("hdparm", "-I"): ok(SSD)})
    caps = probe("/dev/sdb", str(sys_dir), runner)
    assert caps.interface == "usb" and runner.calls == []
    assert caps.secure_problem.startswith("/dev/sdb is behind a USB bridge: peagent sends no ATA or NVMe")


@pytest.mark.parametrize(("path", "vendor", "expected"), [
    ("devices/pci0000:00/0000:00:03.0/virtio1/block/vda", None, "virtio"),
    ("devices/virtual/block/loop3", None, "loop"),
    ("devices/platform/mmc0/mmc0:0001/block/mmcblk0", None, "mmc"),
    ("devices/pci0000:00/0000:00:05.0/host2/target2:0:0/2:0:0:0/block/sdc", "SEAGATE \n", "scsi"),
    ("devices/pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0/block/sdd", "ATA     \n", "ata"),
    ("devices/pci0000:00/0000:00:1d.0/usb1/1-1/1-1:1.0/host3/target3:0:0/3:0:0:0/block/sde", "Samsung \n",
     "usb"),
    ("devices/virtual/block/nbd0", None, "unknown"),
])
def test_interface_of(tmp_path, path, vendor, expected):
    link = "../../../" + path.split("/")[-3] if "/block/sd" in path else None
    sys_dir = make_disk(tmp_path, path, device_link=link, vendor=vendor)
    if expected == "scsi":
        (sys_dir / "device/scsi_disk").mkdir()
    assert interface_of(sys_dir) == expected


def test_probe_virtio_has_only_discard_and_zeroes(tmp_path):
    sys_dir = make_disk(tmp_path, "devices/pci0000:00/0000:00:03.0/virtio1/block/vda", discard=1 << 30,
                        write_zeroes=1 << 30)
    runner = FakeRunner()
    caps = probe("/dev/vda", str(sys_dir), runner)
    assert (caps.interface, caps.discard, caps.discard_zeroes, caps.write_zeroes) == ("virtio", True, None, True)
    assert caps.secure_problem == ("/dev/vda is a virtio disk: the hypervisor offers no secure erase (erase "
                                   "the backing storage on the host)")
    assert runner.calls == []


def test_caps_travel_as_json():
    caps = EraseCaps(device="/dev/nvme0n1", size=1 << 30, interface="nvme", nvme_sanitize=("crypto", "block"),
                     discard_zeroes=None, ata_erase_minutes=None)
    doc = json.loads(json.dumps(caps.to_dict()))
    assert doc["nvme_sanitize"] == ["crypto", "block"]
    assert EraseCaps.from_dict(doc) == caps
    assert EraseCaps.from_dict({**doc, "added_by_a_newer_agent": 1}) == caps
    assert EraseCaps.from_dict({"device": "/dev/sda"}) == EraseCaps(device="/dev/sda")
