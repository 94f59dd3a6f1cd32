"""A PXE site in network namespaces: the network a machine netboots from, made of real servers.

::

    namespace "site-dhcp"  10.77.0.1  dnsmasq as the site's own DHCP server (addresses only)
    namespace "pxe"        10.77.0.2  netboot/dnsmasq/peagent-proxy.conf: proxy-DHCP + TFTP,
                                      its TFTP root made by netboot/make-tftp-root;
                                      optionally nginx with netboot/nginx/peagent-dp.conf (port 80,
                                      through tests.support.nginx)
    clients                (DHCP)     PXE clients: Python (tests.support.dhcp) or QEMU on a tap

all on one bridge (:class:`tests.support.netns.Lan`); nothing is reachable but these. The
servers run as they would in production, privilege drop included, so their files live in a
world-readable temporary directory (pytest's own is root-only). Every server's output goes to
a log file; :meth:`PxeSite.logs` gathers them for failure messages.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from tests.support.netns import Lan, Netns
from tests.support.nginx import Nginx

ROOT = Path(__file__).resolve().parents[2]
NETBOOT = ROOT / "netboot"
SUBNET = "10.77.0"
DHCP_IP = f"{SUBNET}.1"
PXE_IP = f"{SUBNET}.2"


class Daemon:
    """A server in a namespace, writing to a log file; started ready or not at all."""

    def __init__(self, ns: Netns, name: str, argv: Sequence[str], log: Path) -> None:
        self.ns, self.name, self.argv, self.log = ns, name, list(argv), log
        self.proc: subprocess.Popen | None = None

    def start(self, ready: str, timeout: float = 15.0) -> Daemon:
        """Start it and wait until its log matches ``ready`` (a regex)."""
        with self.log.open("wb") as out:
            self.proc = self.ns.popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not re.search(ready, self.text()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else "timed out"
                self.stop()
                raise RuntimeError(f"{self.name} did not start ({why}): {' '.join(self.argv)}\n{self.text()}")
            time.sleep(0.05)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class PxeSite:
    """The namespaces and servers of the module docstring; a context manager that removes them all."""

    def __init__(self, work: Path, proxy_args: Sequence[str] = (), tftp_args: Sequence[str] = (),
                 dp_root: Path | None = None) -> None:
        self.work, self.dp_root = work, dp_root
        self.proxy_args, self.tftp_args = list(proxy_args), list(tftp_args)
        self.daemons: list[Daemon | Nginx] = []
        self.nginx: Nginx | None = None
        self._stack = contextlib.ExitStack()
        self.public = Path()
        self.tftp_root = Path()

    def __enter__(self) -> PxeSite:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def _start(self) -> None:
        st = self._stack
        self.public = Path(tempfile.mkdtemp(prefix="peagent-site-"))
        st.callback(shutil.rmtree, self.public, ignore_errors=True)
        self.public.chmod(0o755)
        self.tftp_root = self.public / "tftp"
        subprocess.run([str(NETBOOT / "make-tftp-root"), str(self.tftp_root), *self.tftp_args],
                       check=True, capture_output=True)

        self.lan = st.enter_context(Lan())
        self.dhcp_ns = st.enter_context(Netns("site-dhcp"))
        self.pxe_ns = st.enter_context(Netns("pxe"))
        self.lan.join(self.dhcp_ns, f"{DHCP_IP}/24")
        self.lan.join(self.pxe_ns, f"{PXE_IP}/24")
        st.callback(self._stop_daemons)

        # The site's DHCP server: addresses only, and (as most do) itself as next-server.
        self._daemon(self.dhcp_ns, "site-dhcp", [
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--no-ping", "--log-dhcp",
            "--log-facility=-", f"--dhcp-range={SUBNET}.100,{SUBNET}.199,255.255.255.0,1h",
            f"--dhcp-leasefile={self.work}/site-dhcp.leases", "--pid-file=",
        ], ready=r"DHCP, IP range")
        # The PXE server exactly as netboot/README.md runs it, plus test plumbing (foreground,
        # log to stderr, no lease or pid file outside the test's directories).
        self._daemon(self.pxe_ns, "pxe-dnsmasq", [
            "dnsmasq", f"--conf-file={NETBOOT / 'dnsmasq' / 'peagent-proxy.conf'}",
            f"--dhcp-range={SUBNET}.0,proxy", f"--tftp-root={self.tftp_root}", *self.proxy_args,
            "--no-daemon", "--log-facility=-", f"--dhcp-leasefile={self.work}/pxe.leases", "--pid-file=",
        ], ready=r"TFTP root is")
        if self.dp_root is not None:
            shown = self.public / "dp"
            shutil.copytree(self.dp_root, shown)
            for path in [shown, *shown.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
            # The shipped server block as is (port 80, every address of the PXE server).
            self.nginx = Nginx(shown, work=self.public, port=80, address=None, ns=self.pxe_ns,
                               log_dir=self.work / "nginx")
            self.nginx.log_dir.mkdir(exist_ok=True)
            self.daemons.append(self.nginx)
            self.nginx.__enter__()

    def _daemon(self, ns: Netns, name: str, argv: list[str], ready: str) -> Daemon:
        daemon = Daemon(ns, name, argv, self.work / f"{name}.log")
        self.daemons.append(daemon)
        return daemon.start(ready)

    def _stop_daemons(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()

    def daemon(self, name: str) -> Daemon | Nginx:
        return next(d for d in self.daemons if d.name == name)

    @contextlib.contextmanager
    def client(self) -> Iterator[Netns]:
        """A fresh namespace plugged into the LAN as eth0, without an address: a bare machine."""
        with Netns("client") as ns:
            self.lan.join(ns)
            yield ns

    def logs(self) -> str:
        return "\n".join(f"----- {d.name} log ({d.log}) -----\n{d.text()}" for d in self.daemons)
