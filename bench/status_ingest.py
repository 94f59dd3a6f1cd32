"""Benchmark: status events from 200 machines at once into ``peagent serve``, and every one stored once.

A lab re-imaged at once is 200 PEs reporting to one DP: phase after phase, and while the image
streams, a progress event every second or so. This measures how many events a second the status
store of ``peagent serve`` accepts under that load, how long one POST takes (p50, p99), and checks
that nothing was lost or stored twice.

A real ``peagent serve`` (``python -m peagent serve DIR``, a subprocess, its database fresh for
every run) hands out 200 deployments, one per simulated machine, through ``GET /api/v1/task``
as the PE asks for its task: each comes with its id and its own bearer token. Then 200 threads,
one per machine, released together, report like the agent: each event goes into the machine's
journal (peagent.status.journal) and the agent's own sender (peagent.status.sender, on a
requests session, as in the PE) posts what is unacknowledged, in batches ``{"events": [...]}``.
A machine's script (seeded, ``--events`` per machine, 60 by default):

* 6 phase events (boot, inventory, task, plan, erase, partition), each posted on its own;
* then the transfer's progress events (fetch and write, with bytes done, total, rate and ETA) in
  bursts of 1 to 20 appended before the sender runs, as when the image stages outrun the link:
  these go as batches;
* 6 closing phase events (verify, drivers, state, record, bootentry, done), each on its own.

About one POST in 50 (``--lose``) has its answer "lost": the server stored the batch, but the
sender sees a connection error and, as in the PE, replays the batch from the journal, which the
server must count as duplicates (the lost answer's connection is closed, as a broken one would
be, and the sender opens another).

Before that, the 200 machines' first requests (each opens its connection, which requests and the
server keep alive) are made all at once and timed apart (``connect``: until all are answered,
the slowest, and the SYNs the kernel dropped because the server's listen backlog was full), so
the load figures are about ingestion, not about 200 handshakes in the same millisecond. Two
loads follow, on the same deployments:

* ``flat out``: every machine plays its script as fast as the server answers: the rate the
  server sustains (events/s), and what a POST then takes, mostly waiting behind the others;
* ``paced``: every machine sends a progress event a second (``--paced-seconds``, 15), spread
  over the second, the agent's real pace while an image streams: 200 events/s offered, and the
  p50 and p99 of a POST at that load.

Afterwards, through the API: every deployment's timeline (``GET /api/v1/deployments/{id}/events``)
holds exactly the machine's journal, each event once, in order; the server's counts
(``accepted``, ``duplicates`` of every answer) add up to the events sent and the replays.

As in bench.dp_concurrent, the server runs on CPU 0 and the clients (this process) on the other
CPUs (``--no-pin`` to share them), so on 2 CPUs the server has one CPU and its clients cannot take
it; the CPU seconds each side used are recorded, to show which side was the limit.

Rate = events accepted (duplicates not counted) / wall time from the release of the 200 threads to
the last one finishing; median of 3 runs (``--runs``). A POST's latency is timed in the client,
from the call to the answer read, so it includes waiting for the client's own GIL among 200
threads; the events accepted per second of the server's own CPU (``server_events_per_cpu_s``)
are its cost alone.

    .venv/bin/python -m bench.status_ingest [--runs 3] [--machines 200] [--events 60] [--paced-seconds 15]
                                            [--lose 0.02] [--no-pin]

Results: bench/results/status_ingest.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.dp_concurrent import SERVER_CPU, cpu_seconds, listen_drops, peagent_serve, pin
from bench.transfer import ROOT, span, summary
from peagent.state.model import Secret
from peagent.status.event import Event
from peagent.status.journal import Journal
from peagent.status.sender import Sender

RESULTS = ROOT / "bench" / "results" / "status_ingest.json"
OPENING = ("boot", "inventory", "task", "plan", "erase", "partition")
CLOSING = ("verify", "drivers", "state", "record", "bootentry", "done")
IMAGE_BYTES = 8 << 30  # what the progress events count up to
MAX_BURST = 20
CONNECT_TIMEOUT = 300  # seconds: a connection whose handshake the server dropped can take minutes to recover


class LostAnswer(requests.ConnectionError):
    """The server answered, but the answer did not reach the agent (simulated)."""


@dataclass
class Post:
    """One POST as the agent's sender made it."""

    seconds: float
    events: int
    status: int
    accepted: int
    duplicates: int
    lost: bool


class TimedSession(requests.Session):
    """The agent's session, timing each POST and losing an answer now and then (``lose`` of them)."""

    def __init__(self, lose: float, rng: random.Random) -> None:
        super().__init__()
        self.lose, self.rng = lose, rng
        self.posts: list[Post] = []

    def post(self, url: str | bytes, data: Any = None, **kwargs: Any) -> requests.Response:
        started = time.perf_counter()
        response = super().post(url, data=data, **kwargs)
        seconds = time.perf_counter() - started
        counts = response.json() if response.status_code == 200 else {}
        lost = self.rng.random() < self.lose
        # The sender's compact JSON starts every event with its schema: counted without parsing the batch
        # again, which would cost the clients' CPU as much as building it did.
        events = data.count(b'{"schema":')
        self.posts.append(Post(seconds, events, response.status_code, counts.get("accepted", 0),
                               counts.get("duplicates", 0), lost))
        if lost:
            response.close()
            raise LostAnswer("the answer was lost (simulated)")
        return response


@dataclass
class Machine:
    """One simulated PE: its deployment, and the agent's journal and sender for it."""

    number: int
    deployment_id: str
    session: TimedSession
    journal: Journal
    sender: Sender
    script: list[list[tuple[str, dict[str, Any]]]]  # what is appended before each send

    def append(self, phase: str, fields: dict[str, Any]) -> None:
        seq = self.journal.next_seq
        self.journal.append(Event(id=uuid.uuid4().hex, deployment_id=self.deployment_id, seq=seq, source="pe",
                                  time=time.time(), phase=phase, message=f"{phase} ({seq})",
                                  machine={"macs": [mac_of(self.number)]}, **fields).to_json())

    def send(self) -> None:
        """Post what is unacknowledged; after a lost answer, replay at once (the PE would back off first)."""
        for _ in range(10):
            if self.sender.send_pending(force=True):
                return
        raise RuntimeError(f"machine {self.number}: events still unsent after 10 tries ({self.sender.refused})")


def mac_of(number: int) -> str:
    return f"02:00:00:00:{number >> 8:02x}:{number & 0xff:02x}"


def make_script(events: int, rng: random.Random) -> list[list[tuple[str, dict[str, Any]]]]:
    """The machine's events as (phase, fields), grouped by what is appended before the sender runs."""
    progress = max(0, events - len(OPENING) - len(CLOSING))
    steps: list[list[tuple[str, dict[str, Any]]]] = [[(phase, {})] for phase in OPENING]
    done = 0
    while done < progress:
        burst = 1 if rng.random() < 0.3 else rng.randint(2, MAX_BURST)
        group = []
        for _ in range(min(burst, progress - done)):
            done += 1
            group.append(("fetch" if done <= progress // 2 else "write", progress_fields(done, progress)))
        steps.append(group)
    steps += [[(phase, {})] for phase in CLOSING]
    return steps


def progress_fields(done: int, steps: int) -> dict[str, Any]:
    moved = IMAGE_BYTES * done // steps
    return {"done": moved, "total": IMAGE_BYTES, "rate": 250e6, "eta": (IMAGE_BYTES - moved) / 250e6}


def flat_out(machine: Machine) -> None:
    """The machine's whole script, as fast as the server takes it."""
    for group in machine.script:
        for phase, fields in group:
            machine.append(phase, fields)
        machine.send()


def paced(machine: Machine, seconds: int, offset: float) -> None:
    """A progress event a second for ``seconds``, ``offset`` into each second: the agent's pace."""
    started = time.perf_counter()
    for k in range(seconds):
        time.sleep(max(0.0, started + offset + k - time.perf_counter()))
        machine.append("write", progress_fields(k + 1, seconds))
        machine.send()


def load(machines: list[Machine], server_pid: int, work: Callable[[Machine], None]) -> dict[str, Any]:
    """``work`` for every machine, each in its own thread, released together; the figures of its POSTs."""
    gate = threading.Barrier(len(machines) + 1)
    failures: dict[int, BaseException] = {}
    first_post = {m.number: len(m.session.posts) for m in machines}

    def thread(machine: Machine) -> None:
        try:
            gate.wait()
            work(machine)
        except BaseException as exc:  # reported below, with the machine's number
            failures[machine.number] = exc
            gate.abort()

    threads = [threading.Thread(target=thread, args=(m,)) for m in machines]
    for t in threads:
        t.start()
    server_cpu, client_cpu, drops = cpu_seconds([server_pid]), os.times(), listen_drops()
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    after = os.times()
    server_cpu = cpu_seconds([server_pid]) - server_cpu
    if failures:
        number, exc = next(iter(failures.items()))
        raise RuntimeError(f"{len(failures)} machines failed; machine {number}: {exc!r}") from exc
    posts = [p for m in machines for p in m.session.posts[first_post[m.number]:]]
    accepted = sum(p.accepted for p in posts)
    singles = [p.seconds for p in posts if p.events == 1]
    batches = [p.seconds for p in posts if p.events > 1]
    every = [p.seconds for p in posts]
    return {
        "seconds": round(seconds, 3), "events": accepted, "posts": len(posts),
        "events_per_s": round(accepted / seconds, 1), "posts_per_s": round(len(posts) / seconds, 1),
        "lost_answers": sum(p.lost for p in posts), "duplicates": sum(p.duplicates for p in posts),
        "events_per_batch_mean": round(statistics.mean(p.events for p in posts if p.events > 1), 1)
        if batches else None,
        "latency_ms": {"p50": ms(percentile(every, 0.5)), "p99": ms(percentile(every, 0.99)), "max": ms(max(every)),
                       "single_p50": ms(percentile(singles, 0.5)), "single_p99": ms(percentile(singles, 0.99)),
                       **({"batch_p50": ms(percentile(batches, 0.5)), "batch_p99": ms(percentile(batches, 0.99))}
                          if batches else {})},
        "server_cpu_s": round(server_cpu, 2),
        "client_cpu_s": round((after.user - client_cpu.user) + (after.system - client_cpu.system), 2),
        "server_events_per_cpu_s": round(accepted / server_cpu, 1) if server_cpu else None,
        "listen_drops": listen_drops() - drops,
    }


def connect_all(url: str, machines: list[Machine]) -> dict[str, Any]:
    """Every machine's first request (which opens its connection, kept alive afterwards), all at once.

    This is the moment a lab's PEs come up together: the seconds until all were answered, the
    slowest one, and the SYNs the kernel dropped because the server's listen backlog was full (a
    dropped SYN is sent again after 1 s, then 2, 4, ...).
    """
    gate = threading.Barrier(len(machines) + 1)
    took: list[float] = []
    errors: list[BaseException] = []

    def one(machine: Machine) -> None:
        try:
            gate.wait()
            started = time.perf_counter()
            machine.session.get(f"{url}api/v1/deployments/{machine.deployment_id}",
                                timeout=CONNECT_TIMEOUT).raise_for_status()
            took.append(time.perf_counter() - started)
        except BaseException as exc:  # re-raised below
            errors.append(exc)
            gate.abort()

    threads = [threading.Thread(target=one, args=(m,)) for m in machines]
    for t in threads:
        t.start()
    drops = listen_drops()
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(machines)} machines' first requests failed: {errors[0]!r}")
    return {"seconds": round(seconds, 2), "slowest_s": round(max(took), 2),
            "over_1s": sum(t > 1 for t in took), "listen_drops": listen_drops() - drops}


def hand_out(url: str, machines: int) -> tuple[float, list[tuple[str, str, str]]]:
    """Seconds to hand out a task to each machine, and (deployment id, token, status URL) of each."""
    started = time.perf_counter()
    out = []
    with requests.Session() as session:
        for number in range(machines):
            response = session.get(f"{url}api/v1/task", params={"mac": mac_of(number)}, timeout=30)
            response.raise_for_status()
            task = response.json()
            out.append((task["id"], task["status"]["token"], task["status"]["url"]))
    return time.perf_counter() - started, out


def check_stored(url: str, machine: Machine) -> None:
    """Through the API: the deployment's pe events are the journal's, each once, in order, as sent."""
    response = machine.session.get(f"{url}api/v1/deployments/{machine.deployment_id}/events", timeout=30)
    response.raise_for_status()
    stored = [e for e in response.json()["events"] if e["source"] == "pe"]
    sent = machine.journal.events()
    if [e["id"] for e in stored] != [e["id"] for e in sent]:
        raise RuntimeError(f"deployment {machine.deployment_id}: {len(stored)} events stored, {len(sent)} sent, "
                           "ids differ or out of order")
    if any(a["seq"] != b["seq"] or a["phase"] != b["phase"] or a["done"] != b["done"]
           for a, b in zip(stored, sent, strict=True)):
        raise RuntimeError(f"deployment {machine.deployment_id}: a stored event differs from the one sent")


def check_counts(machines: list[Machine]) -> dict[str, int]:
    """The server's answers add up: every event accepted once, every replayed one a duplicate."""
    posts = [p for m in machines for p in m.session.posts]
    sent = sum(len(m.journal.events()) for m in machines)
    accepted = sum(p.accepted for p in posts)
    duplicates = sum(p.duplicates for p in posts)
    replayed = sum(p.events for p in posts if p.lost)  # a lost answer's batch is posted again, whole
    bad = [p.status for p in posts if p.status != 200]
    if bad or accepted != sent or duplicates != replayed:
        raise RuntimeError(f"the server's counts do not add up: {len(bad)} POSTs not 200 ({bad[:5]}), accepted "
                           f"{accepted} of {sent} sent, {duplicates} duplicates for {replayed} replayed")
    return {"events": sent, "posts": len(posts), "replayed": replayed}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def one_run(work: Path, args: argparse.Namespace, run: int, pinned: bool) -> dict[str, Any]:
    """A fresh server and database, the deployments, both loads, the checks: one run's figures."""
    db = work / f"status-{run}.sqlite"
    for stale in work.glob(f"status-{run}.sqlite*"):
        stale.unlink()
    prefix = ["taskset", "-c", str(SERVER_CPU)] if pinned else []
    with peagent_serve(work / "dp", prefix, "--db", str(db)) as (url, pid):
        handout_seconds, deployments = hand_out(url, args.machines)
        rng = random.Random(run)
        machines = []
        for number, (deployment_id, token, status_url) in enumerate(deployments):
            session = TimedSession(args.lose, random.Random(rng.random()))
            journal = Journal(None, deployment_id)
            sender = Sender(status_url, Secret(token), journal, session=session, backoff_first=0.0, backoff_max=0.0)
            machines.append(Machine(number, deployment_id, session, journal, sender,
                                    make_script(args.events, random.Random(rng.random()))))
        connect = connect_all(url, machines)
        burst = load(machines, pid, flat_out)
        offsets = {m.number: rng.random() for m in machines}
        steady = load(machines, pid, lambda m: paced(m, args.paced_seconds, offsets[m.number]))
        for machine in machines:
            check_stored(url, machine)
        counts = check_counts(machines)
        for machine in machines:
            machine.session.close()
    return {"flat_out": burst, "paced": steady, "checked": counts, "handout_seconds": round(handout_seconds, 2),
            "connect": connect,
            "db_bytes": sum(p.stat().st_size for p in work.glob(f"status-{run}.sqlite*"))}


def prepare(work: Path) -> None:
    """The DP directory: a default task for every machine (peagent serve's default assignment)."""
    (work / "dp" / "tasks").mkdir(parents=True, exist_ok=True)
    (work / "dp" / "tasks" / "default.json").write_text(json.dumps({"image": {"url": "images/lab/1/"}}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--events", type=int, default=60, help="events per machine (default 60)")
    parser.add_argument("--lose", type=float, default=0.02, help="share of answers lost (default 0.02)")
    parser.add_argument("--paced-seconds", type=int, default=15,
                        help="length of the paced load, a progress event a second per machine (default 15)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-status-ingest")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let the server and clients share every CPU")
    args = parser.parse_args()
    logging.getLogger("peagent").setLevel(logging.ERROR)  # the sender's warnings about the answers lost on purpose
    shutil.rmtree(args.work, ignore_errors=True)
    prepare(args.work)
    cpus = os.sched_getaffinity(0)
    pinned = args.pin and len(cpus) >= 2 and SERVER_CPU in cpus
    client_cpus = cpus - {SERVER_CPU} if pinned else cpus
    if pinned:
        pin([os.getpid()], client_cpus)  # the clients are this process's threads
    samples = []
    for run in range(args.runs):
        sample = one_run(args.work, args, run, pinned)
        samples.append(sample)
        burst, steady, connect = sample["flat_out"], sample["paced"], sample["connect"]
        print(f"run {run + 1}: {args.machines} first requests at once answered in {connect['seconds']:.1f} s "
              f"(slowest {connect['slowest_s']:.1f} s, {connect['listen_drops']} SYNs dropped); flat out "
              f"{burst['events_per_s']:.0f} events/s in {burst['posts_per_s']:.0f} POSTs/s "
              f"({burst['events']} events, {burst['seconds']:.1f} s; server {burst['server_cpu_s']:.1f} CPU s = "
              f"{burst['server_events_per_cpu_s']:.0f} events per CPU s, clients {burst['client_cpu_s']:.1f} CPU s), "
              f"POST p50 {burst['latency_ms']['p50']:.0f} ms p99 {burst['latency_ms']['p99']:.0f} ms; paced "
              f"{steady['events_per_s']:.0f} events/s, POST p50 {steady['latency_ms']['p50']:.1f} ms p99 "
              f"{steady['latency_ms']['p99']:.1f} ms; every event stored once; load {os.getloadavg()[0]:.2f}",
              flush=True)
    figures: dict[str, Any] = {}
    for part in ("flat_out", "paced"):
        figures[part] = {name: summary([s[part][name] for s in samples], 1)
                         for name in ("events_per_s", "posts_per_s", "server_events_per_cpu_s", "server_cpu_s",
                                      "client_cpu_s")}
        figures[part]["latency_ms"] = {name: summary([s[part]["latency_ms"][name] for s in samples], 2)
                                       for name in samples[0][part]["latency_ms"]}
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "cpus": len(cpus),
        "python": platform.python_version(), "requests": requests.__version__,
        "setup": {"machines": args.machines, "events_per_machine": args.events, "paced_seconds": args.paced_seconds,
                  "lose": args.lose, "runs": args.runs, "pinned": pinned,
                  "server_cpu": SERVER_CPU if pinned else None, "client_cpus": sorted(client_cpus)},
        **figures, "samples": samples,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{args.machines} machines at once; median (range) of {args.runs} runs; flat out: {args.events} events "
          f"each as fast as accepted; paced: one event a second each for {args.paced_seconds} s\n")
    print("| load | events/s | POSTs/s | POST p50 ms | POST p99 ms | events per server CPU s |")
    print("|---|---|---|---|---|---|")
    for part in ("flat_out", "paced"):
        f = figures[part]
        print(f"| {part.replace('_', ' ')} | {span(f['events_per_s'])} | {span(f['posts_per_s'])} | "
              f"{span(f['latency_ms']['p50'])} | {span(f['latency_ms']['p99'])} | "
              f"{span(f['server_events_per_cpu_s'])} |")


if __name__ == "__main__":
    main()
