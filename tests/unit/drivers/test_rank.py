"""Windows' choice among driver packages: which decorated Models sections apply, the 0xSSGGTHHH rank,
the DriverVer tie-breaks, and the explanation of why each loser lost. Golden cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from peagent.drivers.inf import Inf, parse_inf, read_inf
from peagent.drivers.rank import (
    Candidate,
    applicable,
    candidates,
    catalog_for,
    explain,
    identifier_score,
    normalize_arch,
    rank_candidates,
)
from peagent.errors import TaskError

FIXTURES = Path(__file__).parent / "fixtures"

# A Dell I219-LM, rev 0x10, as peagent.drivers.hwids lists it (most specific first).
I219_HWIDS = ("PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028&REV_10", "PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028",
              "PCI\\VEN_8086&DEV_15B8&REV_10", "PCI\\VEN_8086&DEV_15B8", "PCI\\VEN_8086&DEV_15B8&CC_020000",
              "PCI\\VEN_8086&DEV_15B8&CC_0200")
I219_COMPAT = ("PCI\\VEN_8086&DEV_15B8&REV_10", "PCI\\VEN_8086&DEV_15B8", "PCI\\VEN_8086&CC_020000",
               "PCI\\VEN_8086&CC_0200", "PCI\\VEN_8086", "PCI\\CC_020000", "PCI\\CC_0200")


def package(models: str, *, driverver: str = "06/21/2023,12.19.1.37", catalog: str = "CatalogFile.NTamd64=p.cat",
            decorations: str = "NTamd64", name: str = "p.inf") -> Inf:
    """A small NIC INF; ``models`` are the lines of every Models section named after its decoration."""
    text = (f'[Version]\r\nSignature="$Windows NT$"\r\nClass=Net\r\nProvider=%Mfg%\r\n{catalog}\r\n'
            f"DriverVer={driverver}\r\n[Manufacturer]\r\n%Mfg%=Models{',' if decorations else ''}{decorations}\r\n")
    for decoration in decorations.split(",") if decorations else [""]:
        text += f"[Models{'.' if decoration else ''}{decoration}]\r\n{models}\r\n"
    inf = parse_inf((text + '[Strings]\r\nMfg="Vendor"\r\n').encode("utf-16"), name)
    assert inf.warnings == ()
    return inf


def rank(*packages: tuple[str, Inf], hwids=I219_HWIDS, compat=I219_COMPAT, arch="amd64", os=(10, 0, 19045)):
    found = [c for pid, inf in packages for c in candidates(pid, inf, arch, os)]
    return rank_candidates(hwids, compat, found, arch)


@pytest.mark.parametrize(("os_version", "sections"), [
    ((10, 0, 19045), ["E15B8.10.0.1", "E15B8.10.0.1", "E15B7.10.0.1", "E15BB.10.0.1"]),
    ("10.0.16299", ["E15B8.10.0.1", "E15B8.10.0.1", "E15B7.10.0.1", "E15BB.10.0.1"]),
    ((10, 0, 14393), ["E15B8.6.1.1"]),  # the section for build 16299 and later is skipped
    ((10, 0), ["E15B8.6.1.1"]),  # unknown build: the build-specific section never applies
    ((6, 1, 7601), ["E15B8.6.1.1"]),
    ((6, 0, 6002), []),  # nothing this old for amd64, and the x86 section never applies
])
def test_closest_decoration_not_above_the_target(os_version, sections) -> None:
    inf = read_inf(FIXTURES / "e1d68x64.inf")
    assert [m.install_section for m in applicable(inf, "amd64", os_version)] == sections
    assert [m.install_section for m in applicable(inf, "x86_64", os_version)] == sections


def test_x86_gets_the_x86_section() -> None:
    inf = read_inf(FIXTURES / "e1d68x64.inf")
    assert [m.install_section for m in applicable(inf, "i686", (10, 0, 19045))] == ["E15B8.x86"]
    assert applicable(inf, "arm64", (10, 0, 22000)) == []


def test_x86_only_package_is_never_applicable_on_amd64() -> None:
    line = "%Mfg%=Old, PCI\\VEN_8086&DEV_15B8"
    for decorations in ("", "NTx86", "NT", "NTx86.6.1,NT.5.1"):
        inf = package(line, decorations=decorations)
        assert applicable(inf, "amd64", (10, 0, 19045)) == []
        assert [m.install_section for m in applicable(inf, "x86", (10, 0, 19045))] == ["Old"]
        assert rank(("old", inf)) == []


def test_undecorated_section_is_not_used_when_a_decoration_fits() -> None:
    inf = package("%Mfg%=Inst, PCI\\VEN_8086&DEV_15B8", decorations="NTx86.6.1")
    text = b'[Models]\r\n%Mfg%=Legacy, PCI\\VEN_8086&DEV_15B8\r\n'
    both = parse_inf(b'[Version]\r\nSignature="$Windows NT$"\r\nDriverVer=1/1/2020\r\n[Manufacturer]\r\n'
                     b'%Mfg%=Models,NTx86.6.1\r\n[Models.NTx86.6.1]\r\n%Mfg%=Inst, PCI\\VEN_8086&DEV_15B8\r\n' + text +
                     b'[Strings]\r\nMfg=V\r\n')
    assert [m.install_section for m in applicable(inf, "x86", (6, 1))] == ["Inst"]
    assert [m.install_section for m in applicable(both, "x86", (6, 1))] == ["Inst"]
    assert [m.install_section for m in applicable(both, "x86", (6, 0))] == ["Legacy"]  # Vista: 6.1 is above it


def test_product_type_and_suite_decorations() -> None:
    inf = package("%Mfg%=Inst, PCI\\VEN_8086&DEV_15B8", decorations="NTamd64.10.0.3,NTamd64.6.3")
    assert applicable(inf, "amd64", (10, 0, 17763), product_type=3)[0].decoration.text == "NTamd64.10.0.3"
    assert applicable(inf, "amd64", (10, 0, 17763))[0].decoration.text == "NTamd64.6.3"  # a workstation
    inf = package("%Mfg%=Inst, PCI\\VEN_8086&DEV_15B8", decorations="NTamd64.10.0..0x10")
    assert applicable(inf, "amd64", (10, 0, 1), suite=0x110) != []
    assert applicable(inf, "amd64", (10, 0, 1), suite=0x100) == []


def test_identifier_score_table() -> None:
    entry = package("%Mfg%=I, PCI\\VEN_8086&DEV_15B8&REV_10, pci\\ven_8086&cc_0200").models[0]
    # device hardware id #2 = INF hardware id (case-insensitive); the compatible ids would score worse
    assert identifier_score(I219_HWIDS, I219_COMPAT, entry) == (0x0002, I219_HWIDS[2],
                                                                "PCI\\VEN_8086&DEV_15B8&REV_10")
    assert identifier_score(I219_HWIDS[3:], (), entry) is None  # no device id is VEN&CC, and no compatible ids
    entry = package("%Mfg%=I, PCI\\VEN_8086&DEV_9999, PCI\\VEN_8086&DEV_15B8").models[0]
    assert identifier_score(I219_HWIDS, I219_COMPAT, entry) == (0x1003, I219_HWIDS[3], "PCI\\VEN_8086&DEV_15B8")
    entry = package("%Mfg%=I, PCI\\VEN_8086&CC_0200").models[0]
    assert identifier_score(I219_HWIDS, I219_COMPAT, entry) == (0x2003, I219_COMPAT[3], "PCI\\VEN_8086&CC_0200")
    entry = package("%Mfg%=I, PCI\\VEN_8086&DEV_9999, PCI\\CC_0200").models[0]
    assert identifier_score(I219_HWIDS, I219_COMPAT, entry) == (0x3006, I219_COMPAT[6], "PCI\\CC_0200")
    entry = package("%Mfg%=I, PCI\\VEN_10EC&DEV_8168").models[0]
    assert identifier_score(I219_HWIDS, I219_COMPAT, entry) is None


def test_exact_hardware_id_beats_a_compatible_id_even_when_older() -> None:
    vendor = package("%Mfg%=E15B8, PCI\\VEN_8086&DEV_15B8", driverver="01/01/2019,1.0.0.0")
    generic = package("%Mfg%=Generic, PCI\\VEN_8086&CC_0200", driverver="01/01/2024,9.0.0.0")
    ranked = rank(("generic", generic), ("vendor", vendor))
    assert [(r.package_id, r.rank, r.device_id, r.inf_id) for r in ranked] == [
        ("vendor", 0x00FF0003, "PCI\\VEN_8086&DEV_15B8", "PCI\\VEN_8086&DEV_15B8"),
        ("generic", 0x00FF2003, "PCI\\VEN_8086&CC_0200", "PCI\\VEN_8086&CC_0200")]
    assert explain(ranked) == [
        "chosen: vendor: 'Vendor' [E15B8]: device hardware id = INF hardware id, device id #3 PCI\\VEN_8086&DEV_15B8, "
        "INF id PCI\\VEN_8086&DEV_15B8; signed (p.cat); rank 0x00FF0003; DriverVer 2019-01-01, 1.0.0.0",
        "lost: generic: 'Vendor' [Generic]: rank 0x00FF2003 > winner's 0x00FF0003: matched a compatible id of the "
        "device (PCI\\VEN_8086&CC_0200 = PCI\\VEN_8086&CC_0200)"]


def test_earlier_device_id_position_wins() -> None:
    dell = package("%Mfg%=Dell, PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028", driverver="01/01/2020,1.0.0.0")
    plain = package("%Mfg%=Plain, PCI\\VEN_8086&DEV_15B8", driverver="01/01/2024,2.0.0.0")
    ranked = rank(("plain", plain), ("dell", dell))
    assert [(r.package_id, r.rank) for r in ranked] == [("dell", 0x00FF0001), ("plain", 0x00FF0003)]
    assert explain(ranked)[1] == ("lost: plain: 'Vendor' [Plain]: rank 0x00FF0003 > winner's 0x00FF0001: matched the "
                                  "device's less specific id #3 PCI\\VEN_8086&DEV_15B8, the winner #1 "
                                  "PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028")


def test_signed_beats_unsigned_at_equal_identifier_score() -> None:
    line = "%Mfg%=E15B8, PCI\\VEN_8086&DEV_15B8"
    unsigned = package(line, catalog="CatalogFile.NTx86=x86only.cat", driverver="01/01/2025,3.0.0.0")
    signed = package(line, catalog="CatalogFile=all.cat")
    ranked = rank(("unsigned", unsigned), ("signed", signed))
    assert [(r.package_id, r.rank, r.catalog) for r in ranked] == [("signed", 0x00FF0003, "all.cat"),
                                                                   ("unsigned", 0x80FF0003, None)]
    assert "unsigned (no CatalogFile for amd64)" in ranked[1].reason
    assert explain(ranked)[1] == ("lost: unsigned: 'Vendor' [E15B8]: rank 0x80FF0003 > winner's 0x00FF0003: "
                                  "unsigned (no catalog file for the architecture), the winner is signed")


def test_catalog_for_picks_the_most_specific_decoration() -> None:
    inf = package("%Mfg%=I, X", catalog="CatalogFile=a.cat\r\nCatalogFile.NT=nt.cat\r\nCatalogFile.NTamd64=64.cat")
    assert (catalog_for(inf, "amd64"), catalog_for(inf, "x86"), catalog_for(inf, "aarch64")) == ("64.cat", "nt.cat",
                                                                                                  "nt.cat")


def test_newer_date_wins_a_tie_then_higher_version() -> None:
    line = "%Mfg%=E15B8, PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028"
    old = package(line, driverver="03/01/2021,12.19.1.37")
    new = package(line, driverver="06/21/2023,12.19.1.37")
    newer_version = package(line, driverver="06/21/2023,12.19.2.0")
    ranked = rank(("old", old), ("new", new), ("newer-version", newer_version))
    assert [r.package_id for r in ranked] == ["newer-version", "new", "old"]
    assert explain(ranked)[1:] == [
        "lost: new: 'Vendor' [E15B8]: same rank and DriverVer date, version 12.19.1.37 lower than 12.19.2.0",
        "lost: old: 'Vendor' [E15B8]: same rank, DriverVer 2021-03-01 older than 2023-06-21"]
    twin = package(line, driverver="06/21/2023,12.19.2.0")
    assert explain(rank(("b", twin), ("a", newer_version)))[1] == (
        "lost: b: 'Vendor' [E15B8]: same rank, DriverVer date and version: the first package id in order wins")


def test_feature_score_counts_before_the_identifier() -> None:
    featured = parse_inf(b'[Version]\nSignature="$Windows NT$"\nCatalogFile=f.cat\nDriverVer=1/1/2020,1.0.0.0\n'
                         b'[Manufacturer]\nV=M,NTamd64\n[M.NTamd64]\nNic=Inst, PCI\\VEN_8086&DEV_15B8\n'
                         b'[Inst.NTamd64]\nFeatureScore=0x80\n[Inst]\nFeatureScore=0x10\n')
    exact = package("%Mfg%=Exact, PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028&REV_10")
    ranked = rank(("exact", exact), ("featured", featured))
    assert [(r.package_id, r.rank) for r in ranked] == [("featured", 0x00800003), ("exact", 0x00FF0000)]
    assert explain(ranked)[1].endswith("rank 0x00FF0000 > winner's 0x00800003: feature score 0xFF worse than 0x80")


def test_real_packages_for_a_dell_i219() -> None:
    intel = read_inf(FIXTURES / "e1d68x64.inf")
    realtek = read_inf(FIXTURES / "hdxrt.inf")
    generic = package("%Mfg%=Generic, PCI\\VEN_8086&CC_0200", catalog="", driverver="01/01/2024,1.0.0.0")
    found = [c for pid, inf in (("realtek-audio", realtek), ("intel-nic", intel), ("generic", generic))
             for c in candidates(pid, inf, "amd64", (10, 0, 19045))]
    # Realtek's build-17763 section (3 lines), Intel's build-16299 one (4 lines), the generic line
    assert [(c.package_id, c.entry.install_section) for c in found] == [
        ("realtek-audio", "RtkModel.NT"), ("realtek-audio", "RtkModel.NT"), ("realtek-audio", "RtkModel.NT"),
        ("intel-nic", "E15B8.10.0.1"), ("intel-nic", "E15B8.10.0.1"), ("intel-nic", "E15B7.10.0.1"),
        ("intel-nic", "E15BB.10.0.1"), ("generic", "Generic")]
    assert all(isinstance(c, Candidate) for c in found)
    ranked = rank_candidates([i.lower() for i in I219_HWIDS], I219_COMPAT, found, "amd64")
    assert explain(ranked) == [
        "chosen: intel-nic: 'Intel(R) Ethernet Connection (4) I219-LM' [E15B8.10.0.1]: device hardware id = INF "
        "hardware id, device id #1 pci\\ven_8086&dev_15b8&subsys_07a11028, INF id PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028; "
        "signed (e1d68x64.cat); rank 0x00FF0001; DriverVer 2023-06-21, 12.19.1.37",
        "lost: intel-nic: 'Intel(R) Ethernet Connection (4) I219-LM' [E15B8.10.0.1]: rank 0x00FF0003 > winner's "
        "0x00FF0001: matched the device's less specific id #3 pci\\ven_8086&dev_15b8, the winner #1 "
        "pci\\ven_8086&dev_15b8&subsys_07a11028",
        "lost: intel-nic: 'Intel(R) Ethernet Connection \"I219-V\" ; 100% tested' [E15B7.10.0.1]: rank 0x00FF3003 > "
        "winner's 0x00FF0001: matched a compatible id of the device to a compatible id of the INF "
        "(PCI\\VEN_8086&CC_0200 = PCI\\VEN_8086&CC_0200)",
        "lost: generic: 'Vendor' [Generic]: rank 0x80FF2003 > winner's 0x00FF0001: unsigned (no catalog file for "
        "the architecture), the winner is signed",
    ]


def test_no_candidates_nothing_to_explain() -> None:
    assert rank_candidates(I219_HWIDS, I219_COMPAT, [], "amd64") == [] and explain([]) == []


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(TaskError) as err:
        normalize_arch("sparc64")
    assert str(err.value) == 'arch: expected one of x86, amd64, ia64, arm, arm64 (or x86_64, aarch64, i686), found "sparc64"'
