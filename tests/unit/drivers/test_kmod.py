"""Reading a kernel module's modinfo from its ELF .modinfo section, plain and compressed, and kmod's alias glob."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from peagent.drivers.kmod import ModInfo, ModuleError, decompress, matches, parse_module, read_module
from tests.support.kmod import make_module

RELEASE = "6.1.0-56-amd64"
# The .modinfo of Debian bookworm's e100.ko (6.1.0-56-amd64), aliases shortened to three; parm records
# and the alignment padding between records as the kernel build leaves them.
E100_MODINFO = (
    b"parm=debug:Debug level (0=none,...,16=all)\0parmtype=debug:int\0"
    b"firmware=e100/d102e_ucode.bin\0firmware=e100/d101s_ucode.bin\0firmware=e100/d101m_ucode.bin\0"
    b"license=GPL v2\0author=Copyright(c) 1999-2006 Intel Corporation\0\0\0"
    b"description=Intel(R) PRO/100 Network Driver\0"
    b"alias=pci:v00008086d000027DCsv*sd*bc02sc00i*\0alias=pci:v00008086d00001229sv*sd*bc02sc00i*\0"
    b"alias=pci:v00008086d00001209sv*sd*bc02sc00i*\0"
    b"depends=mii\0retpoline=Y\0intree=Y\0name=e100\0vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \0"
)
E100 = ModInfo(name="e100", aliases=("pci:v00008086d000027DCsv*sd*bc02sc00i*", "pci:v00008086d00001229sv*sd*bc02sc00i*",
                                     "pci:v00008086d00001209sv*sd*bc02sc00i*"),
               firmware=("e100/d102e_ucode.bin", "e100/d101s_ucode.bin", "e100/d101m_ucode.bin"), depends=("mii",),
               vermagic="6.1.0-56-amd64 SMP preempt mod_unload modversions ", release=RELEASE, machine="x86_64",
               description="Intel(R) PRO/100 Network Driver", license="GPL v2")
SIGNATURE_TRAILER = b"\x30\x82fake-pkcs7" + b"\0" * 12 + b"~Module signature appended~\n"


def test_e100_modinfo_from_a_minimal_elf64_module() -> None:
    assert parse_module(make_module(E100_MODINFO), "e100.ko") == E100


def test_a_signed_module_reads_the_same() -> None:
    # Debian signs its modules: the PKCS#7 signature is appended after the ELF data.
    assert parse_module(make_module(E100_MODINFO) + SIGNATURE_TRAILER, "e100.ko") == E100


@pytest.mark.parametrize("suffix", ["xz", "zst", "gz"])
def test_compressed_modules_are_told_by_their_magic(suffix: str) -> None:
    elf = make_module(E100_MODINFO)
    data = {"xz": lambda: lzma.compress(elf, check=lzma.CHECK_CRC32),  # as the kernel's Makefile.modinst makes it
            "zst": lambda: zstandard.ZstdCompressor(level=19).compress(elf),
            "gz": lambda: gzip.compress(elf)}[suffix]()
    assert parse_module(data, f"e100.ko.{suffix}") == E100
    assert parse_module(data, "renamed.bin").name == "e100"  # the content decides, not the name


def test_elf32_big_endian_and_the_architecture() -> None:
    info = parse_module(make_module(E100_MODINFO, elf_class=1, big_endian=True, machine=20), "e100.ko")
    assert (info.name, info.aliases, info.machine) == ("e100", E100.aliases, "ppc")
    assert parse_module(make_module(E100_MODINFO, machine=183), "e100.ko").machine == "aarch64"


def test_an_old_module_without_name_is_named_by_its_file() -> None:
    info = parse_module(make_module(b"alias=usb:v0BDAp8153d*dc*dsc*dp*ic*isc*ip*in*\0depends=usbnet,mii\0"
                                    b"vermagic=5.10.0-28-amd64 SMP mod_unload modversions \0"),
                        "/store/linux/_generic/_generic/r8152/r8152-vendor.ko.xz")
    assert (info.name, info.depends, info.release, info.firmware) == ("r8152_vendor", ("usbnet", "mii"),
                                                                    "5.10.0-28-amd64", ())


@pytest.mark.parametrize(("data", "message"), [
    (b"just text, not a module\n" * 4, "x.ko: not an ELF file (a kernel module is one); starts with b'just'"),
    (make_module(E100_MODINFO)[:200], "x.ko: truncated: section header 0 at byte"),
    (make_module(E100_MODINFO, with_modinfo=False), "x.ko: no .modinfo section: an ELF object, but not a kernel"),
    (lzma.compress(make_module(E100_MODINFO))[:-40] + b"\0" * 40, "x.ko: compressed data is damaged"),
    (b"\x28\xb5\x2f\xfd" + b"\xff" * 60, "x.ko: compressed data is damaged"),
])
def test_what_is_not_a_module_says_why(data: bytes, message: str) -> None:
    with pytest.raises(ModuleError) as caught:
        parse_module(data, "x.ko")
    assert str(caught.value).startswith(message)


def test_read_module_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ModuleError, match=r"missing\.ko: cannot read: No such file or directory"):
        read_module(tmp_path / "missing.ko")


@pytest.mark.parametrize(("pattern", "modalias", "expected"), [
    # e1000e's alias against the sysfs modalias of an I219-V (a Dell Latitude's)
    ("pci:v00008086d000015B8sv*sd*bc*sc*i*", "pci:v00008086d000015B8sv00001028sd000007A1bc02sc00i00", True),
    ("pci:v00008086d000015B8sv*sd*bc*sc*i*", "pci:v00008086d000015B7sv00001028sd000007A1bc02sc00i00", False),
    # kmod compares case-sensitively: upper-case hex in aliases and in sysfs
    ("pci:v00008086d000015B8sv*sd*bc*sc*i*", "pci:v00008086d000015b8sv00001028sd000007a1bc02sc00i00", False),
    # class-based aliases (e100's bc02sc00) and USB interface aliases with character classes
    ("pci:v00008086d00001229sv*sd*bc02sc00i*", "pci:v00008086d00001229sv00008086sd00000001bc02sc00i00", True),
    ("pci:v00008086d00001229sv*sd*bc02sc00i*", "pci:v00008086d00001229sv00008086sd00000001bc01sc00i00", False),
    ("usb:v0BDAp8153d[2-3]*dc*dsc*dp*icFFiscFFip00in*", "usb:v0BDAp8153d3000dc00dsc00dp00icFFiscFFip00in00", True),
    ("usb:v0BDAp8153d[2-3]*dc*dsc*dp*icFFiscFFip00in*", "usb:v0BDAp8153d1000dc00dsc00dp00icFFiscFFip00in00", False),
    ("virtio:d00000001v*", "virtio:d00000001v00001AF4", True),
    ("acpi*:PNP0A08:*", "acpi:PNP0A08:PNP0A03:", True),
    ("of:N*T*Cfoo?bar", "of:NxTyCfooXbar", True),
])
def test_matches_is_kmods_fnmatch(pattern: str, modalias: str, expected: bool) -> None:
    assert matches(pattern, modalias) is expected


REPO = Path(__file__).resolve().parents[3]


def _real_modules() -> list[Path]:
    """Real Debian modules: the e1000 the demo OS build leaves beside its image (build/demo/drivers: `make test`
    builds it first), modules installed on this host, or under PEAGENT_TEST_MODULES (an unpacked linux-image .deb)."""
    demo = sorted((REPO / "build/demo/drivers/linux").glob("**/*.ko*"))
    if demo:
        return demo[:3]
    roots = [Path(p) for p in os.environ.get("PEAGENT_TEST_MODULES", "").split(":") if p]
    roots += [Path("/lib/modules"), Path("/usr/lib/modules")]
    for root in roots:
        found = sorted(p for p in root.glob("*/kernel/drivers/net/**/*.ko*") if p.name.startswith(("e1000", "e100.")))
        if found:
            return found[:3]
    return []


@pytest.mark.allow_skip  # CI has build/demo (make test builds it before pytest), so there it runs
@pytest.mark.skipif(not _real_modules(), reason="no kernel modules: build/demo/drivers, /lib/modules, "
                    "PEAGENT_TEST_MODULES")
@pytest.mark.skipif(shutil.which("modinfo") is None, reason="kmod's modinfo is not installed")
def test_real_modules_read_as_modinfo_reads_them(tmp_path: Path) -> None:
    for path in _real_modules():
        def field(name: str, p: Path = path) -> list[str]:
            out = subprocess.run(["modinfo", "-F", name, str(p)], capture_output=True, text=True, check=True).stdout
            return out.splitlines()

        info = read_module(path)
        assert list(info.aliases) == field("alias") and info.aliases
        assert list(info.firmware) == field("firmware")
        assert ",".join(info.depends) == (field("depends") or [""])[0]
        assert info.name == field("name")[0]
        assert info.release == field("vermagic")[0].split()[0]
        assert info.machine == "x86_64"
        # and the same module as Debian kernels with CONFIG_MODULE_COMPRESS_XZ ship it
        packed = tmp_path / (path.name.split(".ko")[0] + ".ko.xz")
        packed.write_bytes(lzma.compress(decompress(path.read_bytes(), str(path)), check=lzma.CHECK_CRC32))
        assert read_module(packed) == info
