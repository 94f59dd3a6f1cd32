"""The proxy-DHCP + TFTP server, for real: dnsmasq with the shipped configuration beside a site
DHCP server, and PXE clients (tests.support.dhcp) asking it what to boot, then fetching that
by TFTP (tests.support.tftp) and comparing bytes with the source.

What each kind of client must get (see netboot/dnsmasq/peagent-proxy.conf):

============================  =========================  ===============================
client                        how the proxy answers      file
============================  =========================  ===============================
BIOS firmware (arch 0)        PXE menu, boot server      undionly.kpxe
UEFI firmware (arch 7, 9)     next-server, then 4011     ipxe.efi
iPXE, BIOS or UEFI            the same, by platform      peagent.ipxe (first stage)
UEFI, site tag peagent-grub   next-server, then 4011     grubnetx64.efi
not PXE (no PXEClient)        nothing                    -
============================  =========================  ===============================
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netboot.conftest import failed
from tests.netboot.pxesite import DHCP_IP, NETBOOT, PXE_IP, PxeSite
from tests.support import tftp
from tests.support.dhcp import PXE_DISCOVERY_CONTROL, PxeClient, PxeResult, boot_menu, boot_servers
from tests.support.netns import Netns

pytestmark = pytest.mark.root
IPXE = Path("/usr/lib/ipxe")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PxeSite]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    with PxeSite(tmp_path_factory.mktemp("pxe-site")) as pxe_site:
        yield pxe_site


@pytest.fixture
def client(site: PxeSite, request: pytest.FixtureRequest) -> Iterator[Netns]:
    with site.client() as ns:
        yield ns
    if failed(request):
        print(site.logs())


def fetch(ns: Netns, server: str, filename: str) -> bytes:
    sock = ns.call(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        return tftp.fetch(sock, server, filename)


def explain(result: PxeResult) -> str:
    lines = [f"path={result.path} server={result.server} file={result.filename!r} address={result.address}"]
    for p in result.offers:
        lines.append(f"offer from {p.server_id}: yiaddr={p.yiaddr} siaddr={p.siaddr} file={p.file!r} "
                     f"class={p.vendor_class!r} pxe={p.pxe}")
    return "\n".join(lines)


def assert_address_from_site_dhcp(result: PxeResult) -> None:
    """The address always comes from the site DHCP server; the proxy never offers one."""
    assert result.ack is not None and result.ack.server_id == DHCP_IP, explain(result)
    assert result.address and result.address.startswith("10.77.0.1"), explain(result)
    assert result.proxy_offer is not None, explain(result)
    assert result.proxy_offer.server_id == PXE_IP
    assert result.proxy_offer.yiaddr == "0.0.0.0"
    assert result.proxy_offer.vendor_class == "PXEClient"


def test_bios_firmware_gets_a_boot_menu_then_undionly(client: Netns) -> None:
    result = PxeClient(client, arch=0).boot()
    assert_address_from_site_dhcp(result)
    pxe = result.proxy_offer.pxe if result.proxy_offer else {}
    # One item, served by this proxy; discovery only from the listed servers (no broadcast).
    menu = boot_menu(pxe)
    assert [text for _kind, text in menu] == ["peagent: iPXE (BIOS)"], explain(result)
    assert boot_servers(pxe)[menu[0][0]] == [PXE_IP]
    assert pxe[PXE_DISCOVERY_CONTROL] == b"\x03"
    assert result.path == "menu"
    assert (result.server, result.filename) == (PXE_IP, "undionly.kpxe"), explain(result)
    assert fetch(client, result.server, result.filename) == (IPXE / "undionly.kpxe").read_bytes()


@pytest.mark.parametrize("arch", [7, 9])
def test_uefi_firmware_is_sent_to_port_4011_for_ipxe_efi(client: Netns, arch: int) -> None:
    result = PxeClient(client, arch=arch).boot()
    assert_address_from_site_dhcp(result)
    offer = result.proxy_offer
    assert offer is not None
    # No menu (UEFI menus are often broken): the offer names the server, and the file comes
    # from the answer on port 4011.
    assert (offer.siaddr, offer.file, offer.pxe) == (PXE_IP, "", {}), explain(result)
    assert result.path == "4011"
    assert (result.server, result.filename) == (PXE_IP, "ipxe.efi"), explain(result)
    assert fetch(client, result.server, result.filename) == (IPXE / "ipxe.efi").read_bytes()


@pytest.mark.parametrize(("arch", "how", "path"), [
    (0, "user-class", "menu"),
    (7, "user-class", "4011"),
    (9, "user-class", "4011"),
    (7, "option-175", "4011"),
])
def test_ipxe_gets_the_first_stage_script_not_ipxe_again(client: Netns, arch: int, how: str,
                                                         path: str) -> None:
    if how == "user-class":
        pxe_client = PxeClient(client, arch=arch, user_class=b"iPXE")
    else:
        pxe_client = PxeClient(client, arch=arch, ipxe_option=True)
    result = pxe_client.boot()
    assert_address_from_site_dhcp(result)
    assert result.path == path
    assert (result.server, result.filename) == (PXE_IP, "peagent.ipxe"), explain(result)
    assert fetch(client, result.server, result.filename) == (NETBOOT / "ipxe" / "peagent.ipxe").read_bytes()


def test_clients_that_are_not_pxe_get_only_an_address(client: Netns) -> None:
    result = PxeClient(client, pxe=False).boot(wait=2.0)
    assert result.ack is not None and result.ack.server_id == DHCP_IP, explain(result)
    assert result.proxy_offer is None, explain(result)


def test_a_missing_site_file_is_a_prompt_tftp_error(client: Netns) -> None:
    # peagent.ipxe asks for peagent-site.ipxe on every boot; without one, the answer must be
    # an immediate "not found", not a timeout.
    result = PxeClient(client, arch=7, user_class=b"iPXE").boot()
    assert result.server == PXE_IP, explain(result)
    with pytest.raises(tftp.TftpError, match="not found"):
        fetch(client, PXE_IP, "peagent-site.ipxe")


def test_site_tag_peagent_grub_sends_uefi_to_grub(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    with PxeSite(tmp_path, proxy_args=["--tag-if=set:peagent-grub"], tftp_args=["--dp", f"http://{PXE_IP}"]) \
            as site:
        try:
            with site.client() as ns:
                uefi = PxeClient(ns, arch=7).boot()
                assert (uefi.path, uefi.server, uefi.filename) == ("4011", PXE_IP, "grubnetx64.efi"), \
                    explain(uefi)
                image = fetch(ns, PXE_IP, "grubnetx64.efi")
                assert image == (site.tftp_root / "grubnetx64.efi").read_bytes()
                # make-tftp-root --dp built the DP into GRUB: GRUB cannot see this proxy's answer.
                assert f"set peagent_dp_host={PXE_IP}".encode() in image
            with site.client() as ns:
                bios = PxeClient(ns, arch=0).boot()
                assert bios.filename == "undionly.kpxe", explain(bios)
            with site.client() as ns:
                ipxe = PxeClient(ns, arch=7, user_class=b"iPXE").boot()
                assert ipxe.filename == "peagent.ipxe", explain(ipxe)
        finally:
            if failed(request):
                print(site.logs())
