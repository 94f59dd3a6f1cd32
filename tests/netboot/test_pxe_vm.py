"""The whole netboot chain with real firmware: QEMU on the test LAN (tests.netboot.pxesite) boots
from the network through the site DHCP server, peagent's proxy-DHCP + TFTP and nginx as the DP,
and the kernel it ends up running prints its command line, which must carry the PE's
parameters (parsed with the agent's own parser).

The payload is the PE's kernel with a tiny initramfs (busybox: print /proc/cmdline, power off),
so these tests check the boot chain only, in about 30-50 s each under TCG:

* BIOS: SeaBIOS + QEMU's iPXE ROM -> PXE menu + boot server -> peagent.ipxe -> boot.ipxe (HTTP)
* UEFI: OVMF's own PXE (no option ROM) -> ipxe.efi by TFTP -> peagent.ipxe -> boot.ipxe
* UEFI with the site tag peagent-grub: OVMF's PXE -> grubnetx64.efi -> HTTP, DP built in

Where the kernel comes from: $PEAGENT_TEST_KERNEL, else the PE built by buildroot/build-pe.sh
into build/pe (a cache hit when it is up to date).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from peagent.cmdline import parse_cmdline
from tests.netboot.conftest import failed
from tests.netboot.pxesite import NETBOOT, PXE_IP, ROOT, PxeSite
from tests.vm.qemu import VM, Machine

pytestmark = [pytest.mark.vm, pytest.mark.root]
MARKER = "PEAGENT-TEST-CMDLINE:"
BOOT_TIMEOUT = 300  # s, TCG: firmware, iPXE or GRUB, a kernel

INIT = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "{MARKER} $(/bin/busybox cat /proc/cmdline)"
echo o > /proc/sysrq-trigger
/bin/busybox sleep 60
"""


@pytest.fixture(scope="module")
def kernel() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, tap devices)")
    if os.environ.get("PEAGENT_TEST_KERNEL"):
        return Path(os.environ["PEAGENT_TEST_KERNEL"])
    out = ROOT / "build" / "pe"
    subprocess.run([str(ROOT / "buildroot" / "build-pe.sh"), str(out)], check=True)
    return out / "vmlinuz"


@pytest.fixture(scope="module")
def dp(kernel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DP whose PE prints its kernel command line and powers off."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is missing: run scripts/install-deps")
    tree = tmp_path_factory.mktemp("initramfs")
    for sub in ("bin", "proc", "dev"):
        (tree / sub).mkdir()
    shutil.copy(busybox, tree / "bin" / "busybox")
    # busybox is dynamically linked in Debian: take its libraries along.
    ldd = subprocess.run(["ldd", busybox], capture_output=True, text=True, check=True).stdout
    for lib in re.findall(r"(/\S+\.so[.\d]*)", ldd):
        dest = tree / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lib, dest)
    (tree / "init").write_text(INIT)
    (tree / "init").chmod(0o755)

    root = tmp_path_factory.mktemp("dp")
    (root / "pe").mkdir()
    shutil.copy(kernel, root / "pe" / "vmlinuz")
    shutil.copy(NETBOOT / "ipxe" / "boot.ipxe", root / "boot.ipxe")
    files = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--owner=0:0", "--quiet"], cwd=tree, input=files,
                          capture_output=True, check=True).stdout
    subprocess.run(["zstd", "-q", "-3", "-o", str(root / "pe" / "initrd.zst")], input=cpio, check=True)
    return root


@pytest.fixture
def boot(dp: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    """boot(firmware, rom, proxy_args, tftp_args) -> (VM console text, the site's logs)."""
    sites: list[PxeSite] = []
    vms: list[VM] = []

    def run(firmware: str, rom: bool, proxy_args: tuple[str, ...] = (),
            tftp_args: tuple[str, ...] = ()) -> tuple[str, PxeSite]:
        site = PxeSite(tmp_path, proxy_args=proxy_args, tftp_args=tftp_args, dp_root=dp).__enter__()
        sites.append(site)
        tap = site.lan.tap()
        # The NIC boots first; romfile= (empty) takes iPXE's ROM away, leaving the firmware's own PXE.
        nic = "virtio-net-pci,netdev=n0,bootindex=0" + ("" if rom else ",romfile=")
        netdev = f"tap,id=n0,ifname={tap},script=no,downscript=no"
        machine = Machine(firmware=firmware, memory_mib=1024, nic=None,
                          extra=["-netdev", netdev, "-device", nic])
        vm = VM(machine, tmp_path, site.lan.switch.prefix(), name=f"{firmware}-{'rom' if rom else 'pxe'}")
        vms.append(vm)
        vm.start()
        # Up to the line's end: the console arrives in pieces.
        match = vm.expect(rf"{MARKER} (.*)\n", BOOT_TIMEOUT)
        return match.group(1).strip(), site

    yield run
    for vm in vms:
        vm.close()
        if failed(request):
            print(vm.tail(80))
    for site in sites:
        if failed(request):
            print(site.logs())
        site.__exit__(None, None, None)


def assert_fetched_from_dp(site: PxeSite, paths: list[str]) -> None:
    access = site.daemon("nginx").text()
    for path in paths:
        # The first stage asks for its boot script by the machine's identity (a query a static DP ignores; here
        # nginx finds no peagent serve behind it and sends the static script).
        query = r"\?mac=52%3A54%3A00%3A12%3A34%3A56&uuid=[^ ]*" if path == "/boot.ipxe" else ""
        assert re.search(rf'"GET {re.escape(path)}{query} HTTP/1\.1" 200 ', access), f"{path} not served\n{access}"


def test_bios_ipxe_rom_boots_the_pe_through_the_proxy(boot) -> None:
    cmdline, site = boot("bios", rom=True)
    params = parse_cmdline(cmdline)
    assert params.dps == (f"http://{PXE_IP}",), cmdline
    assert "console=ttyS0,115200" in cmdline.split()
    assert re.search(r"sent \S+/peagent\.ipxe to", site.daemon("pxe-dnsmasq").text())
    assert_fetched_from_dp(site, ["/boot.ipxe", "/pe/vmlinuz", "/pe/initrd.zst"])


def test_uefi_firmware_pxe_loads_ipxe_efi_then_the_pe(boot) -> None:
    cmdline, site = boot("uefi", rom=False)
    assert parse_cmdline(cmdline).dps == (f"http://{PXE_IP}",), cmdline
    # EFI iPXE passes the initrd by name only: without this the kernel would find no initramfs
    # (and could not have printed this line).
    assert "initrd=initrd.zst" in cmdline.split()
    log = site.daemon("pxe-dnsmasq").text()
    assert re.search(r"sent \S+/ipxe\.efi to", log) and re.search(r"sent \S+/peagent\.ipxe to", log), log
    assert_fetched_from_dp(site, ["/boot.ipxe", "/pe/vmlinuz", "/pe/initrd.zst"])


def test_uefi_grub_with_the_dp_built_in(boot) -> None:
    cmdline, site = boot("uefi", rom=False, proxy_args=("--tag-if=set:peagent-grub",),
                         tftp_args=("--dp", f"http://{PXE_IP}"))
    assert parse_cmdline(cmdline).dps == (f"http://{PXE_IP}",), cmdline
    assert re.search(r"sent \S+/grubnetx64\.efi to", site.daemon("pxe-dnsmasq").text())
    assert_fetched_from_dp(site, ["/pe/vmlinuz", "/pe/initrd.zst"])
