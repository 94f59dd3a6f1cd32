"""Benchmark: a distribution point serving 20 machines that download the same image at once.

When a lab is re-imaged, every machine boots the PE at about the same moment and fetches the same
blob: what the DP can push in aggregate then sets how long the whole room takes. This measures it
for the two DPs the project ships, in the same run and on the same file: ``peagent serve DIR``
(the embedded DP: a Python thread per connection, bodies sent with ``sendfile``) and nginx with
the repository's server block (netboot/nginx/peagent-dp.conf through tests.support.nginx: one
worker, ``sendfile`` from its event loop).

The file is random, hence incompressible (~1 GiB, ``--size-mib``), made once in
build/bench-dp-concurrent/dp/images/ and read into the page cache before every run: a busy DP
serves a popular image from memory, and what is measured is the server, not the disk. Each run
starts 20 clients at once (``--clients``, threads of this process released together by a barrier),
each downloading the whole file over its own connection to 127.0.0.1 with a minimal HTTP/1.1 GET
whose body is moved by splice(2) into /dev/null: the pages the server sends are passed along by
reference, never copied, so a client costs a few system calls per MiB. (curl, which copies every
byte out of its socket, was tried first: 20 of them saturate a CPU of this machine at about half
of what either server can send, and the run measured curl.) One client splices into a file in
/dev/shm instead, whose sha256 is checked against the file's after the run; every client's status
and byte count are checked.

On a 2-CPU machine the server and its clients would otherwise fight over both CPUs, and the
result would depend on the scheduler more than on the server. So (``--pin``, the default with 2
or more CPUs) the server runs on CPU 0 (every nginx process, every peagent serve thread) and the
clients on the other CPUs: each server gets exactly one CPU, which is all either uses here (one
nginx worker; peagent serve's threads mostly wait in sendfile, which releases the GIL). On
loopback the kernel's TCP work for a segment is done mostly on the sending CPU, so that CPU's
time is part of what the server costs. The server's own CPU seconds (user + system, from
/proc) are recorded beside its rate.

Aggregate rate = bytes delivered to all clients / wall time from starting the first client to the
last one finishing; median of 3 runs (``--runs``), the two servers alternating first.

    sudo .venv/bin/python -m bench.dp_concurrent [--runs 3] [--clients 20] [--size-mib 1024] [--no-pin]

Results: bench/results/dp_concurrent.json (every sample) and a Markdown table on stdout.
Needs nginx; root for nginx's privilege drop (its workers run as nobody).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.transfer import MIB, ROOT, load, run, span, summary, warm
from tests.support.nginx import Nginx

RESULTS = ROOT / "bench" / "results" / "dp_concurrent.json"
BLOB = "images/big.blob"
SERVER_CPU = 0
TICKS = os.sysconf("SC_CLK_TCK")
PIPE_SIZE = 1 << 20  # the default /proc/sys/fs/pipe-max-size


@dataclass(frozen=True)
class Image:
    """The served file: where, how big, its sha256."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Download:
    """One client's result, as curl reported it."""

    status: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Sample:
    """One run against one server."""

    seconds: float
    bytes: int
    mib_s: float
    server_cpu_s: float
    client_cpu_s: float
    client_seconds_min: float
    client_seconds_max: float
    listen_drops: int


def make_image(work: Path, size: int) -> Image:
    """A random file of ``size`` bytes under ``work/dp`` (kept; made again when the size changes)."""
    path = work / "dp" / BLOB
    meta = work / "big.json"
    if path.exists() and meta.exists():
        known = json.loads(meta.read_text())
        if known["size"] == size == path.stat().st_size:
            return Image(path, size, known["sha256"])
    print(f"making {size / MIB:.0f} MiB of random data", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            piece = os.urandom(min(16 * MIB, left))
            digest.update(piece)
            f.write(piece)
            left -= len(piece)
    meta.write_text(json.dumps({"size": size, "sha256": digest.hexdigest()}) + "\n")
    run(["chmod", "-R", "a+rX", str(work / "dp")])  # nginx's workers run as nobody
    return Image(path, size, digest.hexdigest())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; RuntimeError if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before listening on port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args} did not listen on port {port} within {timeout:.0f} s")


@contextlib.contextmanager
def peagent_serve(root: Path, prefix: list[str] | None = None, *options: str) -> Iterator[tuple[str, int]]:
    """``python -m peagent serve root [options]`` on a free loopback port (run through ``prefix``, e.g.
    taskset): (its URL, its pid); stopped on exit. Its output is shown if it fails to start."""
    port = free_port()
    argv = [*(prefix or []), sys.executable, "-m", "peagent", "serve", str(root), "--bind", "127.0.0.1",
            "--port", str(port), *options]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=ROOT)
        try:
            wait_listening(port, proc)
            yield f"http://127.0.0.1:{port}/", proc.pid
        except BaseException:
            log.seek(0)
            print(log.read().decode(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (nginx's master and its workers)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            for child in (task / "children").read_text().split():
                found += family(int(child))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (all their threads) so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / TICKS


def listen_drops() -> int:
    """Connections the kernel dropped so far because a listening socket's backlog was full (all sockets)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["ListenDrops"])


def pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of these processes onto ``cpus`` (threads made later inherit it)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), cpus)


def fetch(url: str, sink: int) -> Download:
    """GET ``url`` into the file descriptor ``sink``, the body moved by splice(2) through a pipe.

    On loopback the server's sendfile puts page-cache pages into the socket's buffers and splice
    moves references to them into the pipe and on to ``sink``: the client never copies the data,
    so its CPU stays out of the measurement (curl, copying every byte out of its socket, saturates
    a CPU of this machine before either server does).
    """
    parts = urlsplit(url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port or 80)) as conn:
        conn.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            piece = conn.recv(64 << 10)
            if not piece:
                raise RuntimeError(f"GET {url}: the connection closed before the end of the headers")
            head += piece
        head, body = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
        os.write(sink, body)
        got = len(body)
        r, w = os.pipe()
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            while got < length:
                moved = os.splice(conn.fileno(), w, PIPE_SIZE)
                if moved == 0:
                    break
                while moved:
                    out = os.splice(r, sink, moved)
                    moved -= out
                    got += out
        finally:
            os.close(r)
            os.close(w)
    return Download(status, got, time.monotonic() - started)


def download_all(url: str, clients: int, keep: Path) -> tuple[float, list[Download]]:
    """``clients`` threads fetching ``url`` at once (the first into ``keep``, the others into
    /dev/null): the wall seconds from their common start to the last end, and each one's result."""
    gate = threading.Barrier(clients + 1)
    results: list[Download | BaseException | None] = [None] * clients

    def client(i: int) -> None:
        sink = os.open(keep if i == 0 else "/dev/null", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            gate.wait()
            results[i] = fetch(url, sink)
        except BaseException as exc:  # reported by the caller, with the others' results
            results[i] = exc
        finally:
            os.close(sink)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    failures = [r for r in results if not isinstance(r, Download)]
    if failures:
        raise RuntimeError(f"{len(failures)} of {clients} downloads of {url} failed: {failures[0]!r}")
    return seconds, [r for r in results if isinstance(r, Download)]


def one_run(name: str, url: str, server_pids: list[int], image: Image, clients: int) -> Sample:
    """One timed run against one server, checked: every client got the whole file, one copy hashed."""
    warm(image.path)
    keep = Path("/dev/shm") / f"peagent-dp-concurrent-{os.getpid()}"
    try:
        used, drops, mine = cpu_seconds(server_pids), listen_drops(), os.times()
        seconds, downloads = download_all(url + BLOB, clients, keep)
        used, drops, after = cpu_seconds(server_pids) - used, listen_drops() - drops, os.times()
        wrong = [d for d in downloads if (d.status, d.bytes) != (200, image.size)]
        if wrong:
            raise RuntimeError(f"{name}: {len(wrong)} of {clients} downloads were not 200 with {image.size} bytes: "
                               f"{wrong[:3]}")
        with keep.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest != image.sha256:
            raise RuntimeError(f"{name}: a download's sha256 is {digest}, the file's is {image.sha256}")
    finally:
        keep.unlink(missing_ok=True)
    total = sum(d.bytes for d in downloads)
    client_cpu = (after.user - mine.user) + (after.system - mine.system)
    return Sample(seconds=round(seconds, 3), bytes=total, mib_s=round(total / MIB / seconds, 1),
                  server_cpu_s=round(used, 2), client_cpu_s=round(client_cpu, 2),
                  client_seconds_min=round(min(d.seconds for d in downloads), 3),
                  client_seconds_max=round(max(d.seconds for d in downloads), 3), listen_drops=drops)


def versions() -> dict[str, str]:
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return {"peagent": run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]).stdout.strip(),
            "python": platform.python_version(), "nginx": nginx, "kernel": platform.release()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the served file (default 1024)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-dp-concurrent")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="let the servers and clients share every CPU")
    args = parser.parse_args()
    cpus = os.sched_getaffinity(0)
    pinned = args.pin and len(cpus) >= 2 and SERVER_CPU in cpus
    client_cpus = cpus - {SERVER_CPU} if pinned else None
    image = make_image(args.work, args.size_mib * MIB)
    samples: dict[str, list[Sample]] = {"peagent serve": [], "nginx": []}
    prefix = ["taskset", "-c", str(SERVER_CPU)] if pinned else []
    with Nginx(args.work / "dp") as dp, peagent_serve(args.work / "dp", prefix) as (serve_url, serve_pid):
        nginx_pids = family(dp.proc.pid) if dp.proc else []
        if pinned and client_cpus:
            pin(nginx_pids, {SERVER_CPU})
            pin([os.getpid()], client_cpus)  # the clients are this process's threads
        servers = {"peagent serve": (serve_url, [serve_pid]), "nginx": (dp.url, nginx_pids)}
        for r in range(args.runs):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                url, pids = servers[name]
                sample = one_run(name, url, pids, image, args.clients)
                samples[name].append(sample)
                print(f"{name} run {r + 1}: {sample.mib_s:.0f} MiB/s ({sample.seconds:.2f} s, clients "
                      f"{sample.client_seconds_min:.2f}-{sample.client_seconds_max:.2f} s, server "
                      f"{sample.server_cpu_s:.2f} CPU s, clients {sample.client_cpu_s:.2f} CPU s, "
                      f"{sample.listen_drops} SYNs dropped), load {load()}", flush=True)
    rates = {name: summary([s.mib_s for s in runs], 1) for name, runs in samples.items()}
    cpu_per_gib = {name: summary([s.server_cpu_s / (s.bytes / (1 << 30)) for s in runs], 3)
                   for name, runs in samples.items()}
    ratio = statistics.median(s.mib_s for s in samples["peagent serve"]) / rates["nginx"]["median"]
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "cpus": len(cpus),
        "versions": versions(),
        "setup": {"file_bytes": image.size, "file_sha256": image.sha256, "clients": args.clients,
                  "runs": args.runs, "pinned": pinned, "server_cpu": SERVER_CPU if pinned else None,
                  "client_cpus": sorted(client_cpus) if client_cpus else None,
                  "client": "threads, splice(2) socket -> pipe -> /dev/null (one to /dev/shm, sha256-checked)"},
        "aggregate_mib_s": rates, "server_cpu_s_per_gib": cpu_per_gib,
        "peagent_serve_over_nginx": round(ratio, 2),
        "samples": {name: [asdict(s) for s in runs] for name, runs in samples.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{args.clients} clients at once, each the whole {image.size / MIB:.0f} MiB file; median (range) of "
          f"{args.runs} runs; {'server on CPU 0, clients on the others' if pinned else 'no pinning'}\n")
    print("| server | aggregate MiB/s | server CPU s per GiB |\n|---|---|---|")
    for name in samples:
        print(f"| {name} | {span(rates[name])} | {span(cpu_per_gib[name])} |")
    print(f"\npeagent serve / nginx: {ratio:.2f}")


if __name__ == "__main__":
    main()
