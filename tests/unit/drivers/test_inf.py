"""The INF parser on files shaped like real vendor packages (fixtures/): an Intel NIC INF in UTF-16LE
with decorated Models sections and a German Strings section, a Realtek audio INF in UTF-8, and a
hand-written INF full of mistakes in cp1252."""

from __future__ import annotations

import codecs
import datetime
from pathlib import Path

import pytest

from peagent.drivers.inf import InfError, TargetOS, parse_driver_ver, parse_inf, parse_target_os, read_inf
from peagent.drivers.infsyntax import Line, decode, logical_lines, tokenize
from peagent.errors import ImageError

FIXTURES = Path(__file__).parent / "fixtures"


def rows(inf):
    return [(m.description, m.install_section, m.hardware_id, m.compatible_ids,
             m.decoration.text if m.decoration else None, m.feature_score) for m in inf.models]


def test_intel_nic_inf_in_utf16le() -> None:
    data = (FIXTURES / "e1d68x64.inf").read_bytes()
    assert data.startswith(codecs.BOM_UTF16_LE)
    inf = parse_inf(data, "Intel/e1d68x64.inf")
    assert inf.encoding == "utf-16-le"
    assert inf.warnings == ()
    assert (inf.driver_class, inf.class_guid, inf.provider) == ("Net", "{4d36e972-e325-11ce-bfc1-08002be10318}",
                                                                "Intel")
    assert inf.catalog_files == {"ntamd64": "e1d68x64.cat", "ntx86": "e1d6832.cat"}
    assert (inf.date, inf.version) == (datetime.date(2023, 6, 21), (12, 19, 1, 37))
    assert [(m.name, m.models_section, [d.text for d in m.decorations], m.line) for m in inf.manufacturers] == [
        ("Intel", "Intel", ["NTamd64.10.0...16299", "NTamd64.6.1", "NTx86"], 20)]
    lm = "Intel(R) Ethernet Connection (4) I219-LM"
    assert rows(inf) == [
        # the hardware id continued onto the next line with a backslash
        (lm, "E15B8.10.0.1", "PCI\\VEN_8086&DEV_15B8&SUBSYS_07A11028", (), "NTamd64.10.0...16299", 0xFF),
        (lm, "E15B8.10.0.1", "PCI\\VEN_8086&DEV_15B8", (), "NTamd64.10.0...16299", 0xFF),
        # "" is a quote, %% a percent sign, ';' inside quotes is text
        ('Intel(R) Ethernet Connection "I219-V" ; 100% tested', "E15B7.10.0.1", "PCI\\VEN_8086&DEV_15B7",
         ("PCI\\VEN_8086&CC_0200",), "NTamd64.10.0...16299", 0xFF),
        # from the second [intel.ntamd64.10.0...16299] block, merged into the first
        ("Intel(R) Ethernet Connection (7) I219-LM", "E15BB.10.0.1", "PCI\\VEN_8086&DEV_15BB&SUBSYS_00008086", (),
         "NTamd64.10.0...16299", 0xFF),
        (lm, "E15B8.6.1.1", "PCI\\VEN_8086&DEV_15B8", (), "NTamd64.6.1", 0xFF),
        (lm, "E15B8.x86", "PCI\\VEN_8086&DEV_15B8", (), "NTx86", 0xFF),
    ]


@pytest.mark.parametrize(("locale", "desc_b8", "desc_bb"), [
    (0x0409, "Intel(R) Ethernet Connection (4) I219-LM", "Intel(R) Ethernet Connection (7) I219-LM"),
    ("0407", "Intel(R) Ethernet-Verbindung (4) I219-LM", "Intel(R) Ethernet-Verbindung (7) I219-LM"),
    (0x0407, "Intel(R) Ethernet-Verbindung (4) I219-LM", "Intel(R) Ethernet-Verbindung (7) I219-LM"),
    (0x040C, "Intel(R) Ethernet Connection (4) I219-LM", "Intel(R) Ethernet Connection (7) I219-LM"),  # no French
])
def test_strings_locale_variant_with_fallback_to_undecorated(locale, desc_b8, desc_bb) -> None:
    inf = read_inf(FIXTURES / "e1d68x64.inf", locale)
    by_section = {m.install_section: m.description for m in inf.models}
    assert (by_section["E15B8.10.0.1"], by_section["E15BB.10.0.1"]) == (desc_b8, desc_bb)
    # keys the German section does not translate come from [Strings]
    assert inf.provider == "Intel"
    assert by_section["E15B7.10.0.1"] == 'Intel(R) Ethernet Connection "I219-V" ; 100% tested'


def test_realtek_audio_inf_in_utf8() -> None:
    inf = read_inf(FIXTURES / "hdxrt.inf")
    assert (inf.encoding, inf.warnings) == ("utf-8", ())
    assert (inf.driver_class, inf.provider, inf.catalog_files) == ("MEDIA", "Realtek Semiconductor Corp.",
                                                                   {"": "HDXRT.cat"})
    assert (inf.date, inf.version) == (datetime.date(2021, 3, 1), (6, 0, 9147, 1))
    desc = "Realtek® Audio \u2013 Lautsprecher für Ä/Ö"
    assert rows(inf) == [
        ("Realtek High Definition Audio", "IntcAzAudModel", "HDAUDIO\\FUNC_01&VEN_10EC&DEV_0295&SUBSYS_102807A1", (),
         "NTamd64", 0xFF),
        ("Realtek High Definition Audio", "IntcAzAudModel", "HDAUDIO\\FUNC_01&VEN_10EC&DEV_0295", (), "NTamd64", 0xFF),
        (desc, "RtkModel.NT", "HDAUDIO\\FUNC_01&VEN_10EC&DEV_0295&SUBSYS_102807A1&REV_1000", (),
         "NTamd64.10.0...17763", 0xFF),
        (desc, "RtkModel.NT", "hdaudio\\func_01&ven_10ec&dev_0295", (), "NTamd64.10.0...17763", 0xFF),  # as written
        (desc, "RtkModel.NT", "HDAUDIO\\FUNC_01&VEN_10EC&DEV_0236", ("HDAUDIO\\FUNC_01&VEN_10EC",),
         "NTamd64.10.0...17763", 0xFF),
    ]


@pytest.mark.parametrize(("prefix", "codec", "encoding"), [
    (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"),
    (b"", "utf-16-le", "utf-16-le"),  # no BOM: told by the NUL in every other byte
])
def test_every_encoding_reads_the_same_inf(prefix, codec, encoding) -> None:
    text = (FIXTURES / "hdxrt.inf").read_text("utf-8")
    reference = read_inf(FIXTURES / "hdxrt.inf")
    inf = parse_inf(prefix + text.encode(codec), str(FIXTURES / "hdxrt.inf"))
    assert inf.encoding == encoding
    assert inf.models == reference.models and inf.provider == reference.provider


def test_ansi_inf_is_read_as_cp1252() -> None:
    assert decode("Mfg=\"Acme®\"".encode("cp1252")) == ('Mfg="Acme®"', "cp1252")
    assert decode(b"\x81") == ("\ufffd", "cp1252")  # undefined in cp1252: replaced, never an error


def test_malformed_inf_lines_are_skipped_with_file_and_line() -> None:
    inf = parse_inf((FIXTURES / "acme-broken.inf").read_bytes(), "Acme/acme.inf")
    assert (inf.encoding, inf.provider, inf.date, inf.version) == ("cp1252", "Acme®", None, None)
    assert inf.warnings == (
        "Acme/acme.inf:5: expected ClassGuid={xxxxxxxx-xxxx-...}, found '{not-a-guid}'",
        "Acme/acme.inf:7: expected DriverVer=mm/dd/yyyy,w.x.y.z with a real date, found '13/45/2023,1.2.3.4' "
        "(month must be in 1..12)",
        "Acme/acme.inf:10: unknown architecture 'sparc' in decoration 'NTsparc' (known: x86, amd64, ia64, arm, arm64); "
        "decoration skipped",
        "Acme/acme.inf:10: expected a decimal number, found 'x' in 'NTamd64.x.1'; decoration skipped",
        "Acme/acme.inf:11: [Manufacturer] names the Models section [Orphan], which is not in the file",
        "Acme/acme.inf:15: expected 'description = install-section, hardware-id[, compatible-id...]', "
        "found 'NoEqualsSign'; line skipped",
        "Acme/acme.inf:16: %NoIds% is not defined in [Strings]; left as written",
        "Acme/acme.inf:16: expected 'description = install-section, hardware-id[, compatible-id...]', "
        "found 'Install'; line skipped",
        "Acme/acme.inf:17: %Bad% is not defined in [Strings]; left as written",
        "Acme/acme.inf:17: expected 'description = install-section, hardware-id[, compatible-id...]', "
        "found ',PCI\\VEN_1234&DEV_0002'; line skipped",
        "Acme/acme.inf:18: %Undefined% is not defined in [Strings]; left as written",
        "Acme/acme.inf:20: expected a section header '[name]', found '[Broken section'; "
        "its lines are skipped up to the next section",
        "Acme/acme.inf:21: line outside any section ignored: '%Lost%=Install, PCI\\VEN_1234&DEV_0004'",
        "Acme/acme.inf:24: expected FeatureScore=0x00..0xFF, found 'big'; default 0xFF used",  # once, not per device
        "Acme/acme.inf:28: a quoted string is not closed before the end of the line; closed there",
    )
    # what is well-formed survives, including the unclosed quote and the undefined string key
    assert rows(inf) == [("Acme good device", "Install", "PCI\\VEN_1234&DEV_0001", (), "NTamd64", 0xFF),
                         ("%Undefined%", "Install", "PCI\\VEN_1234&DEV_0003", (), "NTamd64", 0xFF)]


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff",  # a .sys file
    b"[Version]\r\nClass=Net\r\nDriverVer=01/01/2020,1.0.0.0\r\n",  # no Signature
    b"[Strings]\r\nSignature=\"$Windows NT$\"\r\n",  # a Signature, but not in [Version]
    b"",
])
def test_not_an_inf_is_refused(data) -> None:
    with pytest.raises(InfError) as err:
        parse_inf(data, "pkg/readme.inf")
    assert str(err.value) == ('pkg/readme.inf: expected an INF file with a [Version] section giving '
                              'Signature="$Windows NT$", found none; this is not a Windows driver package INF '
                              '(leave it out of the driver store)')
    assert isinstance(err.value, ImageError) and err.value.code == "driver.not_inf"


def test_minimal_inf_warns_about_what_is_missing() -> None:
    inf = parse_inf(b'[version]\nsignature="$Chicago$"\n[VERSION]\nClass=Media\n', "old.inf")
    assert inf.driver_class == "Media"  # a section written twice is one section, names are case-insensitive
    assert inf.warnings == ("old.inf: [Version] has no DriverVer (required); ties with other packages cannot be broken",
                            "old.inf: no [Manufacturer] entries: this INF installs no devices")
    assert inf.models == ()


def test_manufacturer_name_without_strkey_and_undecorated_models() -> None:
    inf = parse_inf(b'[Version]\nSignature="$Windows NT$"\nDriverVer=1/2/2003\n[Manufacturer]\n"ACME Corp"\n'
                    b'[ACME Corp]\nWidget=W, ACPI\\PNP0A08, *PNP0A08\n', "x.inf")
    assert inf.warnings == () and (inf.date, inf.version) == (datetime.date(2003, 1, 2), None)
    assert rows(inf) == [("Widget", "W", "ACPI\\PNP0A08", ("*PNP0A08",), None, 0xFF)]


def w(found):
    return lambda number, what: found.append((number, what))


@pytest.mark.parametrize(("text", "key", "fields"), [
    ('Provider = %Mfg%', "Provider", ("Intel Corp, Inc",)),  # substituted text is never split
    ('  "a, b" ,c,  " d "  ', None, ("a, b", "c", " d ")),
    ('k = "say ""hi"" = x", %%', "k", ('say "hi" = x', "%")),
    ('desc = inst, PCI\\VEN_8086&DEV_15B8,,', "desc", ("inst", "PCI\\VEN_8086&DEV_15B8", "", "")),
    ('k = 50% off', "k", ("50% off",)),
])
def test_tokenize(text, key, fields) -> None:
    found: list = []
    entry = tokenize(Line(7, text), {"mfg": "Intel Corp, Inc"}, w(found))
    assert (entry.number, entry.key, entry.fields) == (7, key, fields)
    assert found == []


def test_comments_and_continuations_keep_the_first_line_number() -> None:
    text = 'a = "x;y" ; comment "with; quotes"\r\nb = 1, \\\r\n    2, \\\r\n  3\r\n; only a comment\rc = 4 \\'
    assert list(logical_lines(text)) == [Line(1, 'a = "x;y"'), Line(2, "b = 1,     2,   3"), Line(5, ""),
                                         Line(6, "c = 4 ")]


@pytest.mark.parametrize(("text", "expected"), [
    ("NTamd64.10.0...16299", TargetOS("NTamd64.10.0...16299", "amd64", 10, 0, None, None, 16299)),
    ("NTamd64", TargetOS("NTamd64", "amd64")),
    ("nt", TargetOS("nt", None)),
    ("NTx86.6.0.0x3.0x0100", TargetOS("NTx86.6.0.0x3.0x0100", "x86", 6, 0, 3, 0x100)),
    ("NTARM64.10.0.1..22000", TargetOS("NTARM64.10.0.1..22000", "arm64", 10, 0, 1, None, 22000)),
])
def test_parse_target_os(text, expected) -> None:
    assert parse_target_os(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("Win10", "expected a decoration NT[arch][.major[.minor[.type[.suite[.build]]]]], found 'Win10'"),
    ("NTmips", "unknown architecture 'mips' in decoration 'NTmips' (known: x86, amd64, ia64, arm, arm64)"),
    ("NTamd64.10.0.1.0.1.2", "expected a decoration NT[arch][.major[.minor[.type[.suite[.build]]]]], "
                             "found 'NTamd64.10.0.1.0.1.2'"),
    ("NTamd64.10.0...b", "expected a decimal number, found 'b' in 'NTamd64.10.0...b'"),
])
def test_parse_target_os_refuses(text, message) -> None:
    with pytest.raises(ValueError) as err:
        parse_target_os(text)
    assert str(err.value) == message


def test_parse_driver_ver() -> None:
    assert parse_driver_ver("6/1/2023") == (datetime.date(2023, 6, 1), None)
    assert parse_driver_ver(" 06/21/2023 , 12.19 ") == (datetime.date(2023, 6, 21), (12, 19, 0, 0))
    for bad in ("2023-06-21,1.0", "06/21/2023,1.2.3.4.5", "06/21/2023,1.x", "06/21/2023,70000.0"):
        with pytest.raises(ValueError, match="expected"):
            parse_driver_ver(bad)
