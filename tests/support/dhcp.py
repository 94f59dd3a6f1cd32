"""A minimal DHCP + PXE client for tests: it boots like PXE firmware, up to the file name.

PXE (Intel's Preboot eXecution Environment spec 2.1, with RFC 2131/2132/4578) adds a few
things to plain DHCP, and a proxy-DHCP server (dnsmasq in ``proxy`` mode here) lives on them:

* the client marks itself with option 60 ``PXEClient:Arch:xxxxx:UNDI:yyyzzz``, option 93
  (its architecture: 0 BIOS, 7 and 9 x86-64 UEFI), 94 (network interface id) and 97 (UUID);
  iPXE adds user class 77 ``iPXE`` and its own option 175;
* it broadcasts DHCPDISCOVER and collects offers: the ordinary DHCP server offers an address,
  the proxy offers no address (``yiaddr`` 0.0.0.0) but echoes ``PXEClient`` and boot data;
* it takes the address from the DHCP server (REQUEST/ACK), then gets its boot file name in
  one of three ways, depending on what the proxy offered:

  - ``offer``: the proxy offer already has ``siaddr`` and a file name: done;
  - ``menu``: the offer has a PXE boot menu in option 43 (suboption 9) and a list of boot
    servers (suboption 8): the client picks the first item and asks a boot server for it
    with DHCPREQUEST to port 4011, carrying suboption 71 (boot item type, layer 0);
  - ``4011``: the offer names a server (``siaddr``) but no file: the client asks that server
    with DHCPREQUEST on port 4011 and the answer has the file.

:class:`PxeClient` does exactly that from a network namespace and reports every packet, so a
test can assert what the proxy answered at each step. Packets are packed by hand with
``struct``: the format is small and fixed, and a test must not depend on the code it tests.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
import time
from dataclasses import dataclass, field

from tests.support.netns import Netns

BOOTREQUEST, BOOTREPLY = 1, 2
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
MAGIC = b"\x63\x82\x53\x63"
# op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr chaddr sname file magic
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s4s")

# Options (RFC 2132, 4578) and PXE suboptions of option 43 (PXE spec 2.1, table 2-1).
OPT_NETMASK, OPT_VENDOR, OPT_REQUESTED_IP, OPT_MSG_TYPE, OPT_SERVER_ID = 1, 43, 50, 53, 54
OPT_PARAMS, OPT_MAX_SIZE, OPT_CLASS_ID, OPT_USER_CLASS = 55, 57, 60, 77
OPT_ARCH, OPT_NII, OPT_UUID, OPT_IPXE = 93, 94, 97, 175
PXE_DISCOVERY_CONTROL, PXE_BOOT_SERVERS, PXE_BOOT_MENU, PXE_MENU_PROMPT, PXE_BOOT_ITEM = 6, 8, 9, 10, 71

PXE_PORT = 4011


def _ip(raw: bytes) -> str:
    return socket.inet_ntoa(raw)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


@dataclass
class Packet:
    """One BOOTP/DHCP message: the fixed header fields tests look at, and the options."""

    op: int = BOOTREQUEST
    xid: int = 0
    flags: int = 0
    ciaddr: str = "0.0.0.0"
    yiaddr: str = "0.0.0.0"
    siaddr: str = "0.0.0.0"
    giaddr: str = "0.0.0.0"
    chaddr: bytes = b""
    sname: str = ""
    file: str = ""
    options: dict[int, bytes] = field(default_factory=dict)

    def encode(self) -> bytes:
        head = HEADER.pack(
            self.op, 1, len(self.chaddr), 0, self.xid, 0, self.flags,
            socket.inet_aton(self.ciaddr), socket.inet_aton(self.yiaddr),
            socket.inet_aton(self.siaddr), socket.inet_aton(self.giaddr),
            self.chaddr, self.sname.encode(), self.file.encode(), MAGIC,
        )
        opts = b"".join(bytes([code, len(value)]) + value for code, value in self.options.items())
        # Some servers drop packets shorter than a BOOTP message (300 bytes): pad like firmware does.
        return (head + opts + b"\xff").ljust(300, b"\0")

    @classmethod
    def decode(cls, data: bytes) -> Packet:
        if len(data) < HEADER.size:
            raise ValueError(f"DHCP packet too short: {len(data)} bytes")
        (op, _htype, hlen, _hops, xid, _secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
         file, magic) = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ValueError("not a DHCP packet (bad magic cookie)")
        return cls(op, xid, flags, _ip(ciaddr), _ip(yiaddr), _ip(siaddr), _ip(giaddr), chaddr[:hlen],
                   _cstr(sname), _cstr(file), parse_options(data[HEADER.size:]))

    @property
    def msg_type(self) -> int | None:
        value = self.options.get(OPT_MSG_TYPE)
        return value[0] if value else None

    @property
    def server_id(self) -> str | None:
        value = self.options.get(OPT_SERVER_ID)
        return _ip(value) if value else None

    @property
    def vendor_class(self) -> str:
        return self.options.get(OPT_CLASS_ID, b"").decode("latin-1")

    @property
    def pxe(self) -> dict[int, bytes]:
        """The PXE suboptions of option 43 (empty if there is none)."""
        return parse_options(self.options.get(OPT_VENDOR, b""))


def parse_options(data: bytes) -> dict[int, bytes]:
    """Options as code -> value; repeated codes are concatenated (RFC 3396)."""
    options: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        length = data[i + 1]
        options[code] = options.get(code, b"") + data[i + 2:i + 2 + length]
        i += 2 + length
    return options


def boot_menu(pxe: dict[int, bytes]) -> list[tuple[int, str]]:
    """PXE suboption 9: the boot menu as (item type, description) pairs."""
    raw, items, i = pxe.get(PXE_BOOT_MENU, b""), [], 0
    while i + 3 <= len(raw):
        kind, length = struct.unpack_from("!HB", raw, i)
        items.append((kind, raw[i + 3:i + 3 + length].decode("latin-1")))
        i += 3 + length
    return items


def boot_servers(pxe: dict[int, bytes]) -> dict[int, list[str]]:
    """PXE suboption 8: boot server addresses by item type."""
    raw, servers, i = pxe.get(PXE_BOOT_SERVERS, b""), {}, 0
    while i + 3 <= len(raw):
        kind, count = struct.unpack_from("!HB", raw, i)
        addrs = [_ip(raw[i + 3 + 4 * n:i + 7 + 4 * n]) for n in range(count)]
        servers.setdefault(kind, []).extend(addrs)
        i += 3 + 4 * count
    return servers


@dataclass
class PxeResult:
    """Everything a PXE boot attempt saw, for assertions and for failure messages."""

    offers: list[Packet]
    ack: Packet | None = None
    address: str | None = None
    proxy_offer: Packet | None = None
    boot_reply: Packet | None = None
    path: str | None = None  # "offer", "menu" or "4011": see the module docstring
    server: str | None = None
    filename: str | None = None


class PxeClient:
    """A PXE client on interface ``ifname`` of namespace ``ns`` (which must have no address yet)."""

    def __init__(self, ns: Netns, ifname: str = "eth0", arch: int = 0, user_class: bytes | None = None,
                 ipxe_option: bool = False, pxe: bool = True, timeout: float = 5.0) -> None:
        self.ns, self.ifname, self.arch, self.timeout = ns, ifname, arch, timeout
        self.mac = _read_mac(ns, ifname)
        self.xid = int.from_bytes(os.urandom(4), "big")
        self.identity: dict[int, bytes] = {}
        if pxe:
            self.identity = {
                OPT_CLASS_ID: f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode(),
                OPT_ARCH: struct.pack("!H", arch),
                OPT_NII: b"\x01\x02\x01",  # UNDI 2.1
                OPT_UUID: b"\x00" + os.urandom(16),
            }
        if user_class is not None:
            self.identity[OPT_USER_CLASS] = user_class
        if ipxe_option:
            self.identity[OPT_IPXE] = b"\x13\x01\x01"  # iPXE's "HTTP supported" feature flag

    def _packet(self, msg_type: int, ciaddr: str = "0.0.0.0",
                extra: dict[int, bytes] | None = None) -> Packet:
        opts = {OPT_MSG_TYPE: bytes([msg_type]), OPT_MAX_SIZE: struct.pack("!H", 1260),
                OPT_PARAMS: bytes([1, 3, 6, 43, 54, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135])}
        opts.update(self.identity)
        opts.update(extra or {})
        return Packet(xid=self.xid, flags=0x8000, ciaddr=ciaddr, chaddr=self.mac, options=opts)

    def _socket(self) -> socket.socket:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            # Bound to the device, broadcasts leave through it with source 0.0.0.0, as firmware's do.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
            sock.bind(("0.0.0.0", 68))
            return sock

        return self.ns.call(make)

    def _receive(self, sock: socket.socket, until: float, want: int | None = None) -> list[Packet]:
        """Replies to our xid until ``until`` (or the first of type ``want``, if given)."""
        replies: list[Packet] = []
        while (left := until - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, _addr = sock.recvfrom(4096)
            except TimeoutError:
                break
            try:
                packet = Packet.decode(data)
            except ValueError:
                continue
            if packet.op != BOOTREPLY or packet.xid != self.xid:
                continue
            replies.append(packet)
            if want is not None and packet.msg_type == want:
                break
        return replies

    def discover(self, sock: socket.socket, wait: float) -> list[Packet]:
        """Broadcast DHCPDISCOVER; collect offers for ``wait`` s or until both kinds came."""
        sock.sendto(self._packet(DISCOVER).encode(), ("255.255.255.255", 67))
        until, offers = time.monotonic() + wait, []
        while time.monotonic() < until:
            offers += [p for p in self._receive(sock, until, want=OFFER) if p.msg_type == OFFER]
            if _address_offer(offers) and _proxy_offer(offers):
                break
        return offers

    def boot(self, wait: float = 3.0) -> PxeResult:
        """Run the whole PXE exchange; stops early (with what it has) when a step gets no answer."""
        sock = self._socket()
        try:
            result = PxeResult(offers=self.discover(sock, wait))
            offer, result.proxy_offer = _address_offer(result.offers), _proxy_offer(result.offers)
            if offer is None:
                return result
            server_id = offer.options[OPT_SERVER_ID]
            sock.sendto(self._packet(REQUEST, extra={OPT_REQUESTED_IP: socket.inet_aton(offer.yiaddr),
                                                      OPT_SERVER_ID: server_id}).encode(),
                        ("255.255.255.255", 67))
            acks = self._receive(sock, time.monotonic() + self.timeout, want=ACK)
            result.ack = next((p for p in acks if p.msg_type == ACK), None)
            if result.ack is None or result.proxy_offer is None:
                return result
            mask = result.ack.options.get(OPT_NETMASK, socket.inet_aton("255.255.255.0"))
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{_ip(mask)}").prefixlen
            result.address = result.ack.yiaddr
            self.ns.run(["ip", "addr", "add", f"{result.address}/{prefix}", "dev", self.ifname])
            self._boot_file(sock, result)
            return result
        finally:
            sock.close()

    def _boot_file(self, sock: socket.socket, result: PxeResult) -> None:
        proxy = result.proxy_offer
        assert proxy is not None and result.address is not None
        menu = boot_menu(proxy.pxe)
        if proxy.file and proxy.siaddr != "0.0.0.0":
            result.path, result.server, result.filename = "offer", proxy.siaddr, proxy.file
            return
        if menu:
            # Boot server discovery: the first item (prompt timeout 0), asked of its listed server.
            kind = menu[0][0]
            server = boot_servers(proxy.pxe).get(kind, [proxy.server_id])[0]
            item = bytes([PXE_BOOT_ITEM, 4]) + struct.pack("!HH", kind, 0)
            request, result.path = self._packet(REQUEST, result.address, {OPT_VENDOR: item + b"\xff"}), "menu"
        elif proxy.siaddr != "0.0.0.0":
            server, request, result.path = proxy.siaddr, self._packet(REQUEST, ciaddr=result.address), "4011"
        else:
            return
        assert server is not None
        sock.sendto(request.encode(), (server, PXE_PORT))
        replies = self._receive(sock, time.monotonic() + self.timeout, want=ACK)
        result.boot_reply = next((p for p in replies if p.msg_type == ACK), None)
        if result.boot_reply is not None:
            result.server, result.filename = result.boot_reply.siaddr, result.boot_reply.file


def _address_offer(offers: list[Packet]) -> Packet | None:
    return next((p for p in offers if p.yiaddr != "0.0.0.0"), None)


def _proxy_offer(offers: list[Packet]) -> Packet | None:
    return next((p for p in offers if p.yiaddr == "0.0.0.0" and p.vendor_class.startswith("PXEClient")), None)


def _read_mac(ns: Netns, ifname: str) -> bytes:
    # Not /sys/class/net: sysfs shows the namespace that mounted it, whatever thread reads it.
    out = ns.run(["ip", "-j", "link", "show", "dev", ifname], capture_output=True, text=True).stdout
    return bytes.fromhex(json.loads(out)[0]["address"].replace(":", ""))
