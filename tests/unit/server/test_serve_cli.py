"""``peagent serve``'s options: where the database goes (never inside the served DIR), the admin token,
the assignments file, the public URL, the JSON-lines copy of events; and refusals with their reason."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from peagent.cli import main

ADMIN = "admin-0123456789abcdef"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "dp"
    (root / "tasks").mkdir(parents=True)
    (root / "tasks" / "default.json").write_text(json.dumps({"version": 1, "id": "default"}))
    return root


@pytest.mark.parametrize(("extra", "message"), [
    (["--db", "{dir}/status.sqlite"], "--db {dir}/status.sqlite is inside {dir}, which is served to anyone"),
    (["--admin-token-file", "{dir}/admin.token"], "--admin-token-file {dir}/admin.token is inside {dir}"),
    (["--config", "{tmp}/bad.json"], "the assignments are wrong: {tmp}/bad.json: unknown: expected"),
    (["--public-url", "http://dp/x y"], "--public-url: not a URL an iPXE script can carry"),
    (["--admin-token-file", "{tmp}/short.token"], "the admin token is too short"),
])
def test_refusals_say_why(site: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, extra: list[str],
                          message: str) -> None:
    (site / "admin.token").write_text(ADMIN)
    (tmp_path / "short.token").write_text("short")
    (tmp_path / "bad.json").write_text(json.dumps({"unknown": "maybe"}))
    args = [a.format(dir=site, tmp=tmp_path) for a in extra]
    assert main(["serve", str(site), "--bind", "127.0.0.1", "--port", "0", "--db", str(tmp_path / "s.sqlite"),
                 *args]) == 2
    assert message.format(dir=site, tmp=tmp_path) in caplog.text
    assert not (site / "status.sqlite").exists()


@pytest.fixture
def served(site: Path, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    (tmp_path / "admin.token").write_text(ADMIN + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "peagent", "serve", str(site), "--bind", "127.0.0.1", "--port", "0",
         "--admin-token-file", str(tmp_path / "admin.token"), "--status-log", str(tmp_path / "events.jsonl"),
         "--public-url", "http://dp.example:8080"],
        stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[3])
    assert proc.stderr is not None
    url = None
    deadline = time.monotonic() + 20
    lines = []
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        found = re.search(r"serving \S+ at (http://\S+)", line)
        url = found.group(1) if found else None
        if not line and proc.poll() is not None:
            break
    try:
        assert url is not None, "".join(lines)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_served_dir_keeps_its_status_beside_it(served: tuple[str, subprocess.Popen[str]], site: Path,
                                                 tmp_path: Path) -> None:
    url, _proc = served
    task = requests.get(f"{url}api/v1/task", params={"mac": "52:54:00:12:34:56"}, timeout=5).json()
    assert task["status"]["url"] == "http://dp.example:8080/api/v1/events"
    event = {"schema": 1, "id": "event-cli-0001", "deployment_id": task["id"], "seq": 1, "source": "pe",
             "time": time.time(), "phase": "boot", "message": "up"}
    r = requests.post(f"{url}api/v1/events", json=event, timeout=5,
                      headers={"Authorization": f"Bearer {task['status']['token']}"})
    assert r.json() == {"accepted": 1, "duplicates": 0}
    r = requests.post(f"{url}api/v1/machines/52:54:00:12:34:56/approve", timeout=5,
                      headers={"Authorization": f"Bearer {ADMIN}"})  # the file's newline is not part of it
    assert r.status_code == 200
    assert (tmp_path / "dp-status.sqlite").is_file()  # DIR/../<DIR name>-status.sqlite
    assert not any(p.suffix.startswith(".sqlite") for p in site.rglob("*"))
    assert [json.loads(line)["id"] for line in (tmp_path / "events.jsonl").read_text().splitlines()] == [
        "event-cli-0001"]
