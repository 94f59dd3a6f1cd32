"""Network namespaces for tests: private networks where servers and VMs talk only to each other.

A test that needs a network makes its own namespace (loopback up, nothing else), starts its
servers and QEMU inside it with ``ip netns exec``, and deletes it afterwards. Nothing in a
namespace can reach any address outside it, which is what keeps tests off the real network.

Several namespaces can share one Ethernet segment: :class:`Lan` is a bridge in a namespace of
its own, and :meth:`Lan.join` plugs another namespace into it with a veth pair, so DHCP
broadcasts from one member reach all the others (and nothing else).

Python code can open its sockets inside a namespace with :meth:`Netns.call`: the function
runs in a thread that has entered the namespace, and a socket keeps the namespace it was
made in, so the test can go on using it from its own thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


class Netns:
    """A named network namespace with loopback up; a context manager that deletes it on exit."""

    def __init__(self, prefix: str = "pea") -> None:
        # Namespace names become interface-name-like identifiers: keep them short.
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Netns:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.run(["ip", "link", "set", "lo", "up"])
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Processes still inside keep the namespace alive; kill them before deleting it.
        pids = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def prefix(self) -> list[str]:
        """The argv prefix that runs a command inside this namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess:
        kwargs.setdefault("check", True)
        return subprocess.run([*self.prefix(), *argv], **kwargs)  # type: ignore[call-overload]

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen:
        return subprocess.Popen([*self.prefix(), *argv], **kwargs)  # type: ignore[call-overload]

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` inside this namespace and return its result (or raise its error).

        setns() changes only the calling thread's namespace, so a short-lived thread enters it
        and the caller's own thread stays where it was. Sockets (and child processes) that
        ``fn`` creates belong to this namespace for good.
        """
        outcome: dict[str, object] = {}

        def enter_and_run() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/run/netns/{self.name}") as nsfile:
                    if libc.setns(nsfile.fileno(), CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns {self.name}: {os.strerror(err)}")
                outcome["value"] = fn(*args)
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=enter_and_run, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome["value"]  # type: ignore[return-value]


class Lan:
    """One Ethernet segment: a bridge in a namespace of its own; members plug in by veth.

    A context manager; deleting the bridge's namespace on exit also deletes every veth pair
    (both ends), so the members' namespaces are left as they were before :meth:`join`.
    """

    def __init__(self, prefix: str = "lan") -> None:
        self.switch = Netns(prefix)
        self._ports = 0

    def __enter__(self) -> Lan:
        self.switch.__enter__()
        try:
            self.switch.run(["ip", "link", "add", "br0", "type", "bridge"])
            self.switch.run(["ip", "link", "set", "br0", "up"])
        except BaseException:
            self.switch.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.switch.__exit__(exc_type, exc, tb)

    def join(self, member: Netns, address: str | None = None, ifname: str = "eth0") -> str:
        """Plug ``member`` into the bridge as ``ifname`` (up; with ``address`` as CIDR if given)."""
        self._ports += 1
        port = f"p{self._ports}"
        self.switch.run(["ip", "link", "add", port, "type", "veth", "peer", "name", ifname,
                         "netns", member.name])
        self.switch.run(["ip", "link", "set", port, "master", "br0", "up"])
        member.run(["ip", "link", "set", ifname, "up"])
        if address:
            member.run(["ip", "addr", "add", address, "dev", ifname])
        return ifname

    def tap(self, name: str = "tap0") -> str:
        """A tap port on the bridge, for a QEMU started in :attr:`switch` (``-netdev tap,ifname=``)."""
        self.switch.run(["ip", "tuntap", "add", name, "mode", "tap"])
        self.switch.run(["ip", "link", "set", name, "master", "br0", "up"])
        return name
