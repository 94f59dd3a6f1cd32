"""A distribution point for tests: ``peagent serve`` in a subprocess, optionally in a namespace, or
the same server in a thread of the test (:func:`embedded_dp`).

Inside a network namespace the DP listens on the namespace's loopback, which QEMU's user
network shows to the guest as 10.0.2.2; :attr:`DPProcess.guest_url` is that address. Both keep
their status in a SQLite database (``db``: by default a temporary one for the embedded DP, and
``<DIR>-status.sqlite`` beside DIR for the process); :meth:`DPProcess.events` reads the events
back through the API, as any client would.
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

import requests

from peagent.server.dp import DPServer
from peagent.state.model import Secret

GUEST_HOST = "10.0.2.2"  # the host's loopback as QEMU user networking shows it to the guest


@contextlib.contextmanager
def embedded_dp(root: Path, *, db: Path | None = None, config: Path | None = None,
                admin_token: str | None = None, public_url: str | None = None) -> Iterator[DPServer]:
    """The embedded DP serving ``root`` on a free loopback port, in a thread; its URL is ``.url``.

    Its status store is ``.store`` (``db``, else a temporary database removed afterwards).
    """
    server = DPServer(("127.0.0.1", 0), root, db=db, config=config,
                      admin_token=Secret(admin_token) if admin_token else None, public_url=public_url)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def api_events(base_url: str, timeout: float = 10) -> list[dict]:
    """Every event the DP at ``base_url`` stored, deployment by deployment (oldest first), each in timeline order."""
    base = base_url.rstrip("/")
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": "500", **({"before": cursor} if cursor else {})}
        page = requests.get(f"{base}/api/v1/deployments", params=params, timeout=timeout)
        page.raise_for_status()
        body = page.json()
        ids += [d["id"] for d in body["deployments"]]
        cursor = body["next"]
        if cursor is None:
            break
    events: list[dict] = []
    for deployment_id in reversed(ids):
        timeline = requests.get(f"{base}/api/v1/deployments/{deployment_id}/events", timeout=timeout)
        timeline.raise_for_status()
        events += timeline.json()["events"]
    return events


class DPProcess:
    def __init__(self, root: Path, prefix: list[str] | None = None, port: int = 8080, *, db: Path | None = None,
                 admin_token_file: Path | None = None, public_url: str | None = None) -> None:
        self.root = root
        self.port = port
        self.prefix = prefix or []
        self.db = db or root.parent / f"{root.name}-status.sqlite"
        self.admin_token_file = admin_token_file
        self.public_url = public_url
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []  # what the server logged, over all its starts

    @property
    def guest_url(self) -> str:
        return f"http://{GUEST_HOST}:{self.port}/"

    @property
    def local_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> DPProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server (again, after :meth:`stop`: same directory, same database) and wait until it serves."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "peagent", "serve", str(self.root), "--bind", "127.0.0.1",
             "--port", str(self.port), "--db", str(self.db),
             *(["--admin-token-file", str(self.admin_token_file)] if self.admin_token_file else []),
             *(["--public-url", self.public_url] if self.public_url else [])],
            stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 20
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            self.output.append(line)
            if "serving" in line:
                # Keep reading its log (for a failing test to show), so that it never blocks on a full pipe.
                threading.Thread(target=self.output.extend, args=(self.proc.stderr,), daemon=True).start()
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"peagent serve did not start (exit {self.proc.poll()})")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def events(self) -> list[dict]:
        """The events the DP stored, read through its API (from the host: in a namespace, through it)."""
        if self.prefix:
            # The DP listens on the namespace's loopback: ask from inside it.
            script = "import json, sys; from tests.support.dp import api_events; print(json.dumps(api_events(sys.argv[1])))"
            out = subprocess.run([*self.prefix, sys.executable, "-c", script, self.local_url], capture_output=True,
                                 text=True, check=True, cwd=Path(__file__).resolve().parents[2])
            return json.loads(out.stdout)
        return api_events(self.local_url)
