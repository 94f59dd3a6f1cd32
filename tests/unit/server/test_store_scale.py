"""The store at the size it is built for: a thousand machines, a hundred thousand events. Ingest keeps
up with thousands of events a second, and the dashboard's machines list, over HTTP, stays well
under 100 ms, because it reads summaries, never the events."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import requests

from peagent.server.store import StatusStore
from tests.support.dp import embedded_dp

MACHINES = 1000
EVENTS_EACH = 100


def batch(k: int) -> list[dict]:
    deployment = f"dep-{k}"
    machine = {"macs": [f"52:54:00:00:{k >> 8:02x}:{k & 0xff:02x}"], "model": f"Model {k % 7}"}
    return [{"schema": 1, "id": f"event-{deployment}-{seq}", "deployment_id": deployment, "seq": seq,
             "source": "pe", "time": 1.7e9 + seq, "phase": "write" if seq < EVENTS_EACH else "done", "step": None,
             "message": "progress", "level": "info", "machine": machine, "done": seq << 20, "total": 100 << 20,
             "rate": 1e8, "eta": 1.0, "retries": 0, "warnings": [], "error": None, "dp": "http://dp", "data": None}
            for seq in range(1, EVENTS_EACH + 1)]


def test_a_thousand_machines_and_a_hundred_thousand_events(tmp_path: Path) -> None:
    db = tmp_path / "status.sqlite"
    store = StatusStore(db)
    started = time.perf_counter()
    for k in range(MACHINES):
        assert store.ingest(batch(k)) == (EVENTS_EACH, 0)
    rate = MACHINES * EVENTS_EACH / (time.perf_counter() - started)
    store.close()
    assert rate > 3000, f"{rate:.0f} events/s"

    root = tmp_path / "dp"
    root.mkdir()
    with embedded_dp(root, db=db) as server, requests.Session() as http:
        times = []
        for _ in range(7):
            t = time.perf_counter()
            r = http.get(f"{server.url}api/v1/machines", timeout=10)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200
        machines = r.json()["machines"]
        assert len(machines) == MACHINES
        assert all(m["deployment"]["status"] == "done" and m["deployment"]["events"] == EVENTS_EACH
                   for m in machines)
        assert statistics.median(times) < 0.1, f"{statistics.median(times) * 1000:.0f} ms"
