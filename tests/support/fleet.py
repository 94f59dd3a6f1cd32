"""A fleet of machines' deployments, as events, for the dashboard's tests and its load benchmark.

:func:`fleet` makes the events a fleet of machines would send (schema 1, as peagent.status emits
them): every outcome a deployment can have, transfers with progress, retries, warnings and failures
with different codes. :func:`feed` puts them into the server's status store the way the server
itself does (machine seen, task handed out or held for approval, events ingested, stamped with their
own times). :func:`dashboard_server` is ``peagent serve`` in a thread, with an admin token.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peagent.server.assign import Identity, machine_key
from peagent.server.dp import DPServer
from peagent.server.store import StatusStore
from peagent.status.event import Event, validate_event
from tests.support.dp import embedded_dp

CHROMIUM = "/usr/bin/chromium"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
MODELS = [("LENOVO", "ThinkPad T14s Gen 4"), ("Dell Inc.", "Latitude 5440"), ("HP", "EliteBook 840 G10"),
          ("Dell Inc.", "OptiPlex 7010"), ("LENOVO", "ThinkCentre M70q Gen 4"), ("Microsoft Corporation", "Surface Pro 9")]
DPS = ["http://dp-a.lab:8080/", "http://dp-b.lab:8080/"]
IMAGE = "images/win11-23h2/2024.05/disk.img.zst"
# (code, the phase that fails, its message): the failures a fleet meets, peagent.errors' codes.
FAILURES = [
    ("fetch.failed", "fetch", f"{IMAGE}: connection reset after 5 retries (last: 10.20.0.5 closed the connection)"),
    ("verify.mismatch", "verify", "bytes 4294967296-4328521727 of /dev/nvme0n1: sha256 differs from the image's"),
    ("target.refused", "plan", "no disk matches target {\"size\": \">=200G\"}: found nvme0n1 (128 GiB)"),
    ("device.io", "write", "/dev/sda: write at 7516192768 failed: Input/output error"),
    ("erase.failed", "erase", "/dev/nvme0n1: nvme format -s1 failed: the drive is frozen (suspend and resume)"),
]
# What a deployment ends as, cycled over the fleet so that every kind is there.
OUTCOMES = ["running", "complete", "failed", "done", "running", "complete", "waiting", "failed", "running",
            "cancelled", "complete", "failed"]
STEPS = [("boot", None, "the PE is up"), ("inventory", None, "3 disks, 2 NICs, 14 PCI devices"),
         ("task", None, "task win11 from the DP"), ("plan", None, "deploy win11-23h2 to nvme0n1"),
         ("erase", "nvme0n1", "crypto erase"), ("partition", "nvme0n1", "GPT: ESP, MSR, Windows, Recovery"),
         ("image", IMAGE, "image checked: 24 frames, signed")]
AFTER = [("verify", "nvme0n1", "every written byte matches"), ("drivers", "Intel I219-LM", "3 driver packages injected"),
         ("state", None, "computer name, domain join and 4 user profiles carried over"),
         ("record", None, "deployment record written"), ("bootentry", None, "UEFI boot entry Windows Boot Manager"),
         ("done", None, "the PE finished"), ("reboot", None, "rebooting into the new OS")]


@dataclass
class Deployment:
    """One deployment's events, in the order its machine sent them (server, pe, firstboot)."""

    id: str
    machine: dict[str, Any]
    outcome: str  # running, done, complete, failed, cancelled, or waiting (for approval: no events)
    rule: str
    task: str
    start: float  # when the machine asked for it
    events: list[dict[str, Any]] = field(default_factory=list)


def fleet(machines: int, *, seed: int = 7, progress_events: int = 6, now: float | None = None, prefix: str = "d",
          special: Callable[[int, dict[str, Any]], None] | None = None) -> list[Deployment]:
    """Deployments of ``machines`` machines (a third of them deployed twice: an older one, then the
    current one), each transfer reported in ``progress_events`` events; deployment ids start with
    ``prefix``. ``special(i, machine)`` may change a machine's identity. Times end about ``now``."""
    rng = random.Random(seed)
    now = time.time() if now is None else now
    out: list[Deployment] = []
    for i in range(machines):
        vendor, model = MODELS[i % len(MODELS)]
        machine: dict[str, Any] = {
            "macs": [f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"],
            "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "serial": f"SN{rng.randrange(10**8):08d}",
            "vendor": vendor, "model": model, "hostname": f"lab-ws-{i:04d}"}
        if special:
            special(i, machine)
        outcome = OUTCOMES[i % len(OUTCOMES)]
        runs = [rng.choice(["failed", "complete"]), outcome] if i % 3 == 0 else [outcome]
        start = now - rng.uniform(600, 4 * 86400) if outcome not in ("running", "waiting") else now - rng.uniform(60, 900)
        for n, kind in enumerate(runs):
            begin = start - (len(runs) - 1 - n) * rng.uniform(86400, 5 * 86400)
            out.append(_deployment(rng, f"{prefix}{i:04d}-{n}", machine, kind, begin, now, progress_events))
    return out


def _deployment(rng: random.Random, dep_id: str, machine: dict[str, Any], outcome: str, start: float, now: float,
                progress_events: int) -> Deployment:
    d = Deployment(dep_id, machine, outcome, "lab-win11" if machine["model"].startswith("ThinkPad") else "default",
                   "tasks/win11.json", start)
    dp = rng.choice(DPS)
    clock = start
    seq = {"server": 0, "pe": 0, "firstboot": 0}
    retries = 0

    def emit(source: str, phase: str, message: str, step: str | None = None, **extra: Any) -> None:
        nonlocal clock
        clock = min(clock + rng.uniform(1, 20), now - 1)
        seq[source] += 1
        event = Event(id=f"{dep_id}.{source}.{seq[source]:05d}", deployment_id=dep_id, seq=seq[source], source=source,
                      time=round(clock, 3), phase=phase, message=message, step=step, machine=machine,
                      dp=dp if source == "pe" else None, retries=retries, **extra)
        d.events.append(validate_event(event.to_json()))

    if outcome == "waiting":
        return d  # the DP holds the machine back: it gets no task, so nothing happens yet
    emit("server", "pxe", "boot script handed out")
    failure = rng.choice(FAILURES) if outcome == "failed" else None
    stop = rng.randrange(2, len(STEPS)) if outcome == "cancelled" or (outcome == "running" and rng.random() < 0.3) \
        else None
    for n, (phase, step, message) in enumerate(STEPS):
        if stop is not None and n == stop:
            return d
        if failure and failure[1] == phase:
            emit("pe", "failed", failure[2], step, level="error", error={"code": failure[0], "message": failure[2]})
            return d
        warnings = ("firmware 1.2.3 of nvme0n1 is on the vendor's known-issues list",) if phase == "erase" and \
            rng.random() < 0.3 else ()
        emit("pe", phase, message, step, warnings=warnings)
    total = rng.randrange(8, 24) << 30
    cut = rng.randrange(1, progress_events) if outcome == "running" else progress_events
    for n in range(1, progress_events + 1):
        if failure and failure[1] in ("fetch", "write") and n == progress_events // 2:
            if failure[0] == "fetch.failed":
                retries += 1
                emit("pe", "retry", "connection reset by the DP; resuming at the last verified frame", IMAGE,
                     level="warning")
            emit("pe", "failed", failure[2], IMAGE, level="error", error={"code": failure[0], "message": failure[2]})
            return d
        if n > cut:
            return d  # still writing
        rate = rng.uniform(80, 260) * (1 << 20)
        done = total * n // progress_events
        emit("pe", "write", f"writing {IMAGE}", IMAGE, done=done, total=total, rate=round(rate, 1),
             eta=round((total - done) / rate, 1))
    for phase, step, message in AFTER:
        if failure and failure[1] == phase:
            emit("pe", "failed", failure[2], step, level="error", error={"code": failure[0], "message": failure[2]})
            return d
        if outcome == "running" and phase == "state":
            return d
        emit("pe", phase, message, step)
    if outcome == "complete":
        emit("firstboot", "complete", "Windows 11 booted and reported")
    return d


def key_of(machine: dict[str, Any]) -> str:
    return machine_key(machine["uuid"], machine["macs"])  # type: ignore[return-value]  # fleet machines have both


def feed(store: StatusStore, deployments: list[Deployment]) -> None:
    """Put the fleet into ``store`` as ``peagent serve`` would, oldest first: the machine asks, is held
    for approval or handed its task, then its events arrive, stamped with their own times."""
    for d in sorted(deployments, key=lambda d: d.start):
        m = d.machine
        key = store.see_machine(Identity(macs=tuple(m["macs"]), uuid=m["uuid"], serial=m["serial"],
                                         vendor=m["vendor"], model=m["model"]), now=d.start)
        if d.outcome == "waiting":
            store.mark_pending(key)
            continue
        store.issue(d.id, machine=key, rule=d.rule, task_name=d.task, task={"id": d.id}, now=d.start)
        first, rest = d.events[:1], d.events[1:]
        store.ingest(first, now=first[0]["time"])
        if rest:
            store.ingest(rest, now=rest[-1]["time"])
        if d.outcome == "cancelled":
            store.cancel(key, now=d.events[-1]["time"] + 30)


# ---------------------------------------------------------------- the DP

@contextlib.contextmanager
def dashboard_server(work: Path) -> Iterator[DPServer]:
    """``peagent serve`` (DIR and database under ``work``, with an admin token) in a thread of this process;
    its dashboard and API at ``.url``, its status store at ``.store``."""
    root = work / "dp"
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "tasks" / "default.json").write_text(json.dumps({"id": "win11", "image": {"url": IMAGE}}))
    with embedded_dp(root, db=work / "status.sqlite", admin_token=ADMIN_TOKEN) as server:
        yield server
