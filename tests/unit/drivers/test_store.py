"""Indexing a driver store laid out by the folder convention, its JSON, and its signature."""

from __future__ import annotations

import codecs
import datetime
import hashlib
import json
import lzma
from pathlib import Path

import pytest

from peagent.drivers.store import (
    StoreIndex,
    index_store,
    load_index,
    write_index,
)
from peagent.errors import ManifestError, SignatureError
from peagent.image.sign import PublicKey, generate_keys, load_private_key
from tests.unit.drivers.test_kmod import E100_MODINFO, make_module

# Shaped like Intel's e1d68x64.inf: UTF-16LE with a BOM, decorated Models sections, several ids per device,
# a German [Strings.0407], a line continuation, and one broken Models line (line 19).
E1D_INF = """\
; Intel(R) Gigabit Ethernet Network Connection
[Version]
Signature   = "$Windows NT$"
Class       = Net
ClassGUID   = {4d36e972-e325-11ce-bfc1-08002be10318}
Provider    = %Intel%
CatalogFile.NTamd64 = e1d68x64.cat
DriverVer   = 06/21/2023,12.19.1.37

[Manufacturer]
%Intel%     = Intel, NTamd64.10.0...16299, NTamd64.6.1

[Intel.NTamd64.10.0...16299]
; DisplayName          Section        DeviceID
%E15B8NC.DeviceDesc% = E15B8.10.0.1, PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028, \\
                       PCI\\VEN_8086&DEV_15B8
%E15B8NC.DeviceDesc% = E15B8.10.0.1, PCI\\VEN_8086&DEV_15B8
%E15B7NC.DeviceDesc% = E15B7.10.0.1, PCI\\VEN_8086&DEV_15B7&REV_10
%Broken.DeviceDesc%
[Intel.NTamd64.6.1]
%E15B8NC.DeviceDesc% = E15B8.6.1, PCI\\VEN_8086&DEV_15B8

[E15B8.10.0.1]
Characteristics = 0x84

[Strings]
Intel = "Intel"
E15B8NC.DeviceDesc = "Intel(R) Ethernet Connection (5) I219-V"
E15B7NC.DeviceDesc = "Intel(R) Ethernet Connection (5) I219-LM"

[Strings.0407]
E15B8NC.DeviceDesc = "Intel(R) Ethernet-Verbindung (5) I219-V"
"""
# Shaped like virtio-win's viostor.inf (UTF-8, one decoration, a plain CatalogFile).
VIOSTOR_INF = """\
[Version]
Signature="$WINDOWS NT$"
Class=SCSIAdapter
ClassGUID={4D36E97B-E325-11CE-BFC1-08002BE10318}
Provider=%VENDOR%
DriverVer=08/05/2024,100.95.104.26200
CatalogFile=viostor.cat

[Manufacturer]
%VENDOR%=RedHat,NTamd64.10.0

[RedHat.NTamd64.10.0]
%RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, PCI\\VEN_1AF4&DEV_1001
%RHELScsi.DeviceDesc% = rhelscsi_inst, PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01, PCI\\VEN_1AF4&DEV_1042

[Strings]
VENDOR = "Red Hat, Inc."
RHELScsi.DeviceDesc = "Red Hat VirtIO SCSI controller"
"""
E1000E_MODINFO = (b"firmware=e1000e/fake-nvm.bin\0alias=pci:v00008086d000015B8sv*sd*bc*sc*i*\0"
                  b"alias=pci:v00008086d000015B7sv*sd*bc*sc*i*\0depends=\0name=e1000e\0"
                  b"vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \0")
DELL = "windows/Dell Inc./Latitude 5440/win11/amd64"


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    write(root / DELL / "intel-lan/e1d68x64.inf", codecs.BOM_UTF16_LE + E1D_INF.replace("\n", "\r\n")
          .encode("utf-16-le"))
    write(root / DELL / "intel-lan/e1d68x64.sys", b"MZ" + bytes(4094))
    write(root / DELL / "intel-lan/e1d68x64.cat", b"0\x82catalog")
    write(root / "windows/_generic/_generic/_generic/x64/viostor/viostor.inf", VIOSTOR_INF)
    write(root / "windows/_generic/_generic/_generic/x64/viostor/viostor.sys", b"MZ driver")
    # A "package" whose INF is not one: a text file someone renamed.
    write(root / "windows/_generic/_generic/win10/amd64/broken/readme.inf", "This package is for Windows 10.\n")
    write(root / "windows/_generic/_generic/win10/amd64/broken/driver.sys", b"MZ")
    write(root / "windows/_generic/_generic/win10/sparc/odd/odd.inf", VIOSTOR_INF)
    write(root / "windows/Dell Inc./notes.txt", "a file where a model folder belongs\n")
    write(root / "linux/Dell Inc./Latitude 5440/e1000e-vendor/e1000e.ko.xz",
          lzma.compress(make_module(E1000E_MODINFO), check=lzma.CHECK_CRC32))
    write(root / "linux/Dell Inc./Latitude 5440/e1000e-vendor/firmware/e1000e/fake-nvm.bin", b"\x01\x02\x03")
    write(root / "linux/_generic/_generic/e100/e100.ko", make_module(E100_MODINFO))
    write(root / "linux/_generic/_generic/e100/bogus.ko", b"not an ELF module")
    write(root / "linux/_generic/_generic/empty/README", "nothing here\n")
    write(root / ".git/config", "[core]\n")  # dot names are ignored everywhere
    write(root / "README.md", "# our drivers\n")
    return root


def test_index_records_groups_files_and_matching_data(store: Path) -> None:
    index = index_store(store)
    assert [p.id for p in index.packages] == [
        "linux/Dell Inc./Latitude 5440/e1000e-vendor", "linux/_generic/_generic/e100",
        f"{DELL}/intel-lan", "windows/_generic/_generic/_generic/x64/viostor"]
    e1000e, e100, intel, viostor = index.packages
    assert (intel.family, intel.make, intel.model, intel.os, intel.arch) == ("windows", "Dell Inc.", "Latitude 5440",
                                                                            "win11", "amd64")
    assert (viostor.make, viostor.model, viostor.os, viostor.arch, viostor.group) == (None, None, None, "amd64",
                                                                                      "generic")
    assert intel.group == "Dell Inc./Latitude 5440"
    sys_file = store / DELL / "intel-lan/e1d68x64.sys"
    inf_size = (store / DELL / "intel-lan/e1d68x64.inf").stat().st_size
    assert [(f.path, f.size) for f in intel.files] == [("e1d68x64.cat", 9), ("e1d68x64.inf", inf_size),
                                                       ("e1d68x64.sys", 4096)]
    assert intel.files[2].sha256 == hashlib.sha256(sys_file.read_bytes()).hexdigest()

    (inf,) = intel.infs
    assert inf.path == f"{DELL}/intel-lan/e1d68x64.inf" and inf.encoding == "utf-16-le"
    assert (inf.driver_class, inf.class_guid, inf.provider) == ("Net", "{4d36e972-e325-11ce-bfc1-08002be10318}",
                                                                "Intel")
    assert (inf.date, inf.version, inf.catalog_files) == (datetime.date(2023, 6, 21), (12, 19, 1, 37),
                                                          {"ntamd64": "e1d68x64.cat"})
    assert [(m.hardware_id, m.compatible_ids, m.decoration.text if m.decoration else None, m.description)
            for m in inf.models] == [
        ("PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028", ("PCI\\VEN_8086&DEV_15B8",), "NTamd64.10.0...16299",
         "Intel(R) Ethernet Connection (5) I219-V"),
        ("PCI\\VEN_8086&DEV_15B8", (), "NTamd64.10.0...16299", "Intel(R) Ethernet Connection (5) I219-V"),
        ("PCI\\VEN_8086&DEV_15B7&REV_10", (), "NTamd64.10.0...16299", "Intel(R) Ethernet Connection (5) I219-LM"),
        ("PCI\\VEN_8086&DEV_15B8", (), "NTamd64.6.1", "Intel(R) Ethernet Connection (5) I219-V")]
    assert [m.install_section for m in inf.models] == ["E15B8.10.0.1", "E15B8.10.0.1", "E15B7.10.0.1", "E15B8.6.1"]
    assert viostor.infs[0].provider == "Red Hat, Inc." and len(viostor.infs[0].models) == 2

    (module,) = e1000e.modules
    assert (module.path, module.info.name, module.info.release, module.info.aliases) == (
        "e1000e.ko.xz", "e1000e", "6.1.0-56-amd64",
        ("pci:v00008086d000015B8sv*sd*bc*sc*i*", "pci:v00008086d000015B7sv*sd*bc*sc*i*"))
    assert e1000e.firmware == ("e1000e/fake-nvm.bin",) and module.info.firmware == ("e1000e/fake-nvm.bin",)
    assert (e1000e.make, e1000e.model, e1000e.os, e1000e.arch) == ("Dell Inc.", "Latitude 5440", None, None)
    assert [m.info.name for m in e100.modules] == ["e100"]  # bogus.ko left out, its file still listed
    assert [f.path for f in e100.files] == ["bogus.ko", "e100.ko"]
    assert (index.inf_count, index.module_count) == (2, 2)


def test_bad_input_is_warned_about_by_file_and_line_never_fatal(store: Path) -> None:
    warnings = index_store(store).warnings
    assert warnings == (
        "README.md: not part of the store: expected only windows/ and linux/ folders (and the index) at its top; "
        "skipped",
        "linux/_generic/_generic/e100/bogus.ko: not an ELF file (a kernel module is one); starts with b'not '; "
        "module skipped",
        "linux/_generic/_generic/empty: a Linux package without a readable kernel module (.ko, .ko.xz, .ko.zst, "
        ".ko.gz) or files under firmware/; skipped",
        f"{DELL}/intel-lan/e1d68x64.inf:19: %Broken.DeviceDesc% is not defined in [Strings]; left as written",
        f"{DELL}/intel-lan/e1d68x64.inf:19: expected 'description = install-section, hardware-id[, "
        "compatible-id...]', found '%Broken.DeviceDesc%'; line skipped",
        "windows/Dell Inc./notes.txt: a file where a <model> folder is expected "
        "(windows/<make>/<model>/<os>/<arch>/<package>/); skipped",
        "windows/_generic/_generic/win10/amd64/broken/readme.inf: expected an INF file with a [Version] section "
        "giving Signature=\"$Windows NT$\", found none; this is not a Windows driver package INF (leave it out of "
        "the driver store); skipped",
        "windows/_generic/_generic/win10/amd64/broken: a Windows package without a usable .inf file; skipped",
        "windows/_generic/_generic/win10/sparc: unknown architecture folder 'sparc' (expected amd64, x86, arm64, "
        "arm, ia64 or _generic); its packages are skipped",
    )


def test_locale_chooses_the_strings_section(store: Path) -> None:
    inf = next(p for p in index_store(store, locale="0407").packages if p.family == "windows" and p.make).infs[0]
    assert [m.description for m in inf.models][:3] == ["Intel(R) Ethernet-Verbindung (5) I219-V"] * 2 + [
        "Intel(R) Ethernet Connection (5) I219-LM"]  # no German string for it: the undecorated one


def test_json_round_trip_and_its_format(store: Path) -> None:
    index = index_store(store)
    text = index.to_json()
    assert StoreIndex.from_json(text) == index
    assert StoreIndex.from_json(text.encode()) == index
    doc = json.loads(text)
    assert doc["format"] == 1 and doc["packages"][2]["infs"][0]["models"][0]["decoration"] == "NTamd64.10.0...16299"
    assert doc["packages"][2]["files"][2] == {"path": "e1d68x64.sys", "size": 4096,
                                             "sha256": hashlib.sha256(b"MZ" + bytes(4094)).hexdigest()}


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(format=2), "expected a driver index of format 1, found format 2"),
    (lambda d: d["packages"][1].pop("files"), "driver index, package 1: expected the field 'files', found none"),
    (lambda d: d["packages"][3]["infs"][0].update(date="21/06/2023"), "driver index, package 3: Invalid isoformat"),
    (lambda d: d["packages"][0]["modules"][0].update(aliases="pci:*"), "driver index, package 0: expected a list"),
])
def test_a_damaged_index_is_refused_saying_where(store: Path, change, message: str) -> None:
    doc = json.loads(index_store(store).to_json())
    change(doc)
    with pytest.raises(ManifestError) as caught:
        StoreIndex.from_json(json.dumps(doc))
    assert str(caught.value).startswith(message)


def test_signed_index_is_verified_and_tampering_refused(store: Path, tmp_path: Path) -> None:
    public = generate_keys(tmp_path / "keys")
    index = index_store(store)
    digest = write_index(index, store, load_private_key(tmp_path / "keys/peagent.key"))
    data, signature = (store / "index.json").read_bytes(), (store / "index.json.sig").read_text()
    assert digest == hashlib.sha256(data).hexdigest() and signature.startswith(f"ed25519 {public.key_id} ")
    assert load_index(data, signature, [public]) == index
    # the store indexed again, the index and its signature now in it: they are not packages nor warnings
    assert index_store(store) == index

    tampered = data.replace(b"pci:v00008086d000015B8sv*", b"pci:v00008086d*sv*", 1)
    with pytest.raises(SignatureError, match=f"the driver index's signature by key {public.key_id} is invalid: "
                                             "the driver index was changed after it was signed"):
        load_index(tampered, signature, [public])
    other = generate_keys(tmp_path / "other")
    with pytest.raises(SignatureError, match=f"the driver index is signed by key {public.key_id}, which this agent "
                                             f"does not trust \\(trusted: {other.key_id}\\)"):
        load_index(data, signature, [other])
    with pytest.raises(SignatureError, match=r"the driver index is not signed \(no index.json.sig\) and the task "
                                             "does not pin its sha256"):
        load_index(data, None, [public])


def test_an_unsigned_index_needs_a_pin(store: Path, tmp_path: Path) -> None:
    write(store / "index.json.sig", "ed25519 0000 stale\n")
    digest = write_index(index_store(store), tmp_path / "out", None)
    write_index(index_store(store), store, None)
    assert not (store / "index.json.sig").exists()  # a stale signature is not left beside a new index
    data = (tmp_path / "out/index.json").read_bytes()
    assert load_index(data, None, [], pin=digest.upper()).packages
    with pytest.raises(SignatureError, match=f"the driver index's sha256 is {digest}, but the task pins 0+"):
        load_index(data, None, [PublicKey(bytes(32))], pin="0" * 64)
