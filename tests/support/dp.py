"""A distribution point for tests: ``peagent serve`` in a subprocess, optionally in a namespace, or
the same server in a thread of the test (:func:`embedded_dp`).

Inside a network namespace the DP listens on the namespace's loopback, which QEMU's user
network shows to the guest as 10.0.2.2; :attr:`DPProcess.guest_url` is that address.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from peagent.server.dp import DPServer

GUEST_HOST = "10.0.2.2"  # the host's loopback as QEMU user networking shows it to the guest


@contextlib.contextmanager
def embedded_dp(root: Path) -> Iterator[DPServer]:
    """The embedded DP serving ``root`` on a free loopback port, in a thread; its URL is ``.url``."""
    server = DPServer(("127.0.0.1", 0), root)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class DPProcess:
    def __init__(self, root: Path, prefix: list[str] | None = None, port: int = 8080) -> None:
        self.root = root
        self.port = port
        self.prefix = prefix or []
        self.status_log = root.parent / f"{root.name}-status.jsonl"
        self.proc: subprocess.Popen | None = None

    @property
    def guest_url(self) -> str:
        return f"http://{GUEST_HOST}:{self.port}/"

    @property
    def local_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> DPProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "peagent", "serve", str(self.root), "--bind", "127.0.0.1",
             "--port", str(self.port), "--status-log", str(self.status_log)],
            stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 20
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "serving" in line:
                return self
            if not line and self.proc.poll() is not None:
                break
        self.__exit__(None, None, None)
        raise RuntimeError(f"peagent serve did not start (exit {self.proc.poll()})")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def events(self) -> list[dict]:
        if not self.status_log.exists():
            return []
        return [json.loads(line) for line in self.status_log.read_text().splitlines() if line]
