"""A minimal TFTP client (RFC 1350, with the blksize/tsize options of RFC 2347-2349) for tests.

TFTP is lock-step over UDP: the client sends a read request (RRQ) to port 69; the server
answers from a fresh port (its "transfer id"), with DATA blocks numbered from 1 that the
client acknowledges one by one; a block shorter than the block size ends the file. If the
client asked for options, the server first answers with OACK (acknowledged as block 0).
PXE firmware asks for ``blksize`` and ``tsize`` like this client does, so a server that
mishandles them fails here the same way it would fail a real machine.
"""

from __future__ import annotations

import socket
import struct
import time

RRQ, DATA, ACK, ERROR, OACK = 1, 3, 4, 5, 6


class TftpError(Exception):
    """The server answered with an ERROR packet, or stopped answering."""


def fetch(sock: socket.socket, server: str, filename: str, blksize: int = 1428,
          timeout: float = 2.0, retries: int = 5, deadline: float = 60.0) -> bytes:
    """Read ``filename`` from ``server`` through ``sock`` (an unbound or bound UDP socket)."""
    request = (struct.pack("!H", RRQ) + filename.encode() + b"\0octet\0"
               + b"blksize\0%d\0tsize\0000\0" % blksize)
    last_sent, dest = request, (server, 69)
    sock.sendto(request, dest)
    peer: tuple[str, int] | None = None
    size, expected, tries = 512, 1, 0
    data = bytearray()
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        sock.settimeout(timeout)
        try:
            packet, addr = sock.recvfrom(65536)
        except TimeoutError:
            tries += 1
            if tries > retries:
                raise TftpError(f"{filename}: no answer from {server} after {retries} retries") from None
            sock.sendto(last_sent, dest)  # lost packet: send our last one again
            continue
        if addr[0] != server or (peer is not None and addr != peer):
            continue  # not from our transfer
        if peer is None:
            peer = dest = addr  # the server's transfer id: all further packets go there
        tries = 0
        opcode = struct.unpack_from("!H", packet)[0]
        if opcode == ERROR:
            code, message = struct.unpack_from("!H", packet, 2)[0], packet[4:].rstrip(b"\0").decode()
            raise TftpError(f"{filename}: error {code} from {server}: {message}")
        if opcode == OACK:
            fields = packet[2:].split(b"\0")
            options = dict(zip(fields[0::2], fields[1::2], strict=False))
            size = int(options.get(b"blksize", b"512"))
            last_sent = struct.pack("!HH", ACK, 0)
        elif opcode == DATA:
            block = struct.unpack_from("!H", packet, 2)[0]
            if block == expected & 0xFFFF:
                payload = packet[4:]
                data += payload
                expected += 1
                last_sent = struct.pack("!HH", ACK, block)
                if len(payload) < size:
                    sock.sendto(last_sent, dest)
                    return bytes(data)
            # else: a duplicate of the previous block (our ACK was lost): ACK it again below.
        sock.sendto(last_sent, dest)
    raise TftpError(f"{filename}: transfer from {server} did not finish in {deadline} s")
