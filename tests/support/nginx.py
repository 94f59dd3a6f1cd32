"""Real nginx for tests, configured by the repository's own DP server block.

Production DPs run nginx with ``netboot/nginx/peagent-dp.conf``; tests that want to know what the
agent meets there run the same block. :class:`Nginx` writes a main ``nginx.conf`` around a copy of
that block with only ``root`` and ``listen`` substituted (the shipped file is never edited), then
runs nginx in the foreground as its child, on a loopback port of the host or in a network
namespace::

    with Nginx() as dp:                      # a fresh world-readable directory, 127.0.0.1:<free port>
        (dp.root / "images").mkdir()
        ...
        requests.get(dp.url + "images/blob.img")

    Nginx(site_dir, work=public, ns=pxe_ns, port=80, address=None)   # as a PXE site's DP

The block also proxies the status API, the per-machine boot script and the dashboard to
``peagent serve`` at 127.0.0.1:8080, its production upstream, which is left as it is: a test of
those paths runs nginx and peagent serve in one network namespace of its own (``ns``), where that
address is free and private (tests/netboot/test_nginx_dp.py). On the host's loopback the proxied
paths answer 502 unless something listens there.

Its workers run as ``nobody`` (nginx drops privileges as in production), so whatever it serves
must be world-readable: pytest's own temporary directories are not (they are root-only), hence the
default of a fresh directory made for the purpose; :func:`world_readable_dir` makes more. The error
log (at ``notice``), the access log (the combined format, plus the Range, If-Match and bytes sent of
each request) and nginx's own output are files in the work directory; :meth:`Nginx.logs` gathers
them for failure messages, and :meth:`Nginx.access` parses the access log for assertions.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.netns import Netns

ROOT = Path(__file__).resolve().parents[2]
SERVER_BLOCK = ROOT / "netboot" / "nginx" / "peagent-dp.conf"
_READY = "start worker process"
# The combined format (what tests and people grep for) followed by what a resumed download sends.
_LOG_FORMAT = ("'$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent "
               "\"$http_referer\" \"$http_user_agent\" range=\"$http_range\" if_match=\"$http_if_match\" "
               "sent=$bytes_sent'")
_ACCESS = re.compile(r'"(?P<method>\S+) (?P<path>\S+) [^"]*" (?P<status>\d+) (?P<body>\d+) .* '
                     r'range="(?P<range>[^"]*)" if_match="(?P<if_match>(?:[^"\\]|\\.)*)" sent=(?P<sent>\d+)$')


def world_readable_dir(prefix: str = "peagent-nginx-") -> Path:
    """A new temporary directory that nginx's workers (nobody) can read; the caller removes it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def server_block(root: Path, port: int = 80, address: str | None = None, source: Path = SERVER_BLOCK,
                 serve: bool = True) -> str:
    """The shipped server block with its root (and listen port, or address and port) substituted.

    With ``address`` the server listens on that address only (IPv4 or [IPv6]) instead of every
    address of the host, which is what keeps a test on loopback. ``serve=False`` switches the
    block's ``$peagent_serve`` to off, as a site without ``peagent serve`` does: nginx is the whole DP.
    """
    block = source.read_text()
    if not serve:
        block, count = re.subn(r'(map "" \$peagent_serve \{\s*default) on;', r"\1 off;", block)
        assert count == 1, f"{source} should switch peagent serve with one map"
    block, count = re.subn(r"(?m)^(\s*root)\s+\S+;", rf"\1 {root};", block)
    assert count == 1, f"{source} should have exactly one root directive"
    listens = re.findall(r"(?m)^\s*listen\s+(\S+)(.*);", block)
    assert listens, f"{source} has no listen directive"
    if address is None:
        block = re.sub(r"(?m)^(\s*listen\s+(?:\[[^\]]*\]:|[\d.]+:)?)\d+", rf"\g<1>{port}", block)
    else:
        first = True

        def one_listen(m: re.Match) -> str:
            nonlocal first
            keep, first = first, False
            end = "\n" if m.group(0).endswith("\n") else ""
            return f"{m.group(1)}listen {address}:{port}{m.group(2)};{end}" if keep else ""

        block = re.sub(r"(?m)^(\s*)listen\s+\S+?((?:\s+[a-z_]+)*);\n?", one_listen, block)
    return block


def nginx_config(work: Path, root: Path, port: int = 80, address: str | None = None,
                 log_dir: Path | None = None, serve: bool = True) -> Path:
    """A main nginx.conf in ``work`` around the shipped server block, serving ``root``; logs in ``log_dir``."""
    log_dir = log_dir or work
    (work / "peagent-dp.conf").write_text(server_block(root, port, address, serve=serve))
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    conf = work / "nginx.conf"
    conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {log_dir}/error.log notice;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format peagent {_LOG_FORMAT};
    access_log {log_dir}/access.log peagent;
    include {work}/peagent-dp.conf;
}}
""")
    return conf


class Nginx:
    """nginx serving ``root`` with the DP server block; a context manager (stops it, keeps the logs).

    ``root`` defaults to a fresh world-readable directory (removed on exit, as is a ``work``
    directory made here); ``port`` to a free port on ``address`` (127.0.0.1). With ``ns`` it runs in
    that namespace; ``address=None`` there keeps the block's own listen addresses. The logs go to
    ``log_dir`` (default: ``work``); nginx's master opens them as root, so any directory will do,
    pytest's own (kept after the run) included.
    """

    name = "nginx"

    def __init__(self, root: Path | None = None, *, work: Path | None = None, port: int | None = None,
                 address: str | None = "127.0.0.1", ns: Netns | None = None, log_dir: Path | None = None,
                 serve: bool = True) -> None:
        self.serve = serve  # False: nginx alone is the DP (the block's $peagent_serve off)
        self._made: list[Path] = []
        self.work = work or self._make_dir("peagent-nginx-work-")
        self.log_dir = log_dir or self.work
        self.root = root or self._make_dir("peagent-dp-")
        self.address = address
        self.port = port
        self.ns = ns
        self.proc: subprocess.Popen | None = None
        self.conf = self.work / "nginx.conf"
        self.error_log = self.log_dir / "error.log"
        self.access_log = self.log_dir / "access.log"
        self.output = self.log_dir / "nginx.out"
        self.log = self.error_log  # where a reader of daemon logs looks first

    def _make_dir(self, prefix: str) -> Path:
        path = world_readable_dir(prefix)
        self._made.append(path)
        return path

    @property
    def url(self) -> str:
        host = self.address or "127.0.0.1"
        return f"http://{host}:{self.port}/"

    def __enter__(self) -> Nginx:
        if shutil.which("nginx") is None:
            raise RuntimeError("nginx is missing: run scripts/install-deps")
        try:
            # A free port is only free until someone takes it: on a clash, draw another.
            for attempt in range(5):
                port = self.port if self.port is not None else _free_port(self.address or "127.0.0.1")
                try:
                    self._start(port)
                    return self
                except RuntimeError as exc:
                    if self.port is not None or "Address already in use" not in str(exc) or attempt == 4:
                        raise
        except BaseException:
            self._cleanup()
            raise
        raise AssertionError("unreachable")

    def _start(self, port: int) -> None:
        for path in (self.error_log, self.access_log, self.output):
            path.unlink(missing_ok=True)
        nginx_config(self.work, self.root, port, self.address, self.log_dir, serve=self.serve)
        argv = ["nginx", "-e", str(self.error_log), "-c", str(self.conf)]
        with self.output.open("wb") as out:
            popen = self.ns.popen if self.ns else subprocess.Popen
            self.proc = popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while _READY not in self._read(self.error_log):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else "timed out"
                self.stop()
                raise RuntimeError(f"nginx did not start ({why}): {' '.join(argv)}\n{self.logs()}")
            time.sleep(0.02)
        self.port = port

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._cleanup()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: nginx's fast shutdown, workers included
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def _cleanup(self) -> None:
        # A work directory made here goes too, but its logs stay readable through text() and logs().
        if self.log_dir in self._made:
            self._saved = (self.text(), self.logs())
        for path in self._made:
            shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def _read(path: Path) -> str:
        with contextlib.suppress(FileNotFoundError):
            return path.read_text(errors="replace")
        return ""

    def text(self) -> str:
        """Everything nginx logged: its output, the error log, then the access log."""
        if hasattr(self, "_saved"):
            return self._saved[0]
        return self._read(self.output) + self._read(self.error_log) + self._read(self.access_log)

    def logs(self) -> str:
        """The logs, labelled, for a failure message."""
        if hasattr(self, "_saved"):
            return self._saved[1]
        return "\n".join(f"----- nginx {label} ({path}) -----\n{self._read(path)}"
                         for label, path in (("output", self.output), ("error log", self.error_log),
                                             ("access log", self.access_log)))

    def access(self) -> list[dict[str, str]]:
        """The access log's entries: method, path, status, body (bytes), range, if_match, sent.

        Header values are as the client sent them ("" when absent; nginx logs "-" and escapes quotes).
        """
        entries = []
        for line in self._read(self.access_log).splitlines():
            if m := _ACCESS.search(line):
                entry = m.groupdict()
                for key in ("range", "if_match"):
                    value = entry[key]
                    entry[key] = "" if value == "-" else re.sub(r"\\x([0-9A-Fa-f]{2})",
                                                               lambda h: chr(int(h.group(1), 16)), value)
                entries.append(entry)
        return entries


def _free_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((address.strip("[]"), 0))
        return s.getsockname()[1]
