"""The status store of ``peagent serve``: machines, deployments and their events, in one SQLite file.

Events (docs/status.md, schema 1) arrive in batches from many machines at once and are read back
by the dashboard every couple of seconds, so the store is built around two rules:

* **Writes are batches, and idempotent.** A batch is one transaction: all of it is stored or none
  of it. An event is keyed by (deployment, event id), so a replay after a lost answer is counted
  as a duplicate and changes nothing.
* **Reads never scan events.** Each deployment row carries its *summary* (status, phase, progress,
  the last error, counts), advanced by :func:`advance` as events are stored, and each machine row
  points at its current deployment. The machines list is then one indexed join, however many
  events there are; only a deployment's own timeline reads its events (by an index in timeline
  order: source server, pe, firstboot, then ``seq``).

A summary follows the *newest* event, by (source, seq): an event that arrives late, after a newer
one, is stored and counted but does not move the phase or the status back. The status itself is a
small state machine (:func:`next_status`): ``failed`` after an error, ``done`` after phase done,
``complete`` after the first boot's report, ``cancelled`` when an administrator cancels, and
``running`` again only when a finished deployment visibly starts over (phase pxe, task or boot).

The database runs in WAL mode: one writer connection behind a lock, and a pool of reader
connections that see the last committed state without waiting for the writer. Tokens are never
stored, only their SHA-256 (they are long random strings, so a plain hash is enough), and they are
compared in constant time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from peagent.server.assign import Identity, MachineView, effective_state, machine_key
from peagent.status.event import SCHEMA

SCHEMA_VERSION = 1  # of the database; another version is refused, not guessed at
RANKS = {"server": 0, "pe": 1, "firstboot": 2}  # a timeline's order of sources
STATUSES = ("running", "done", "complete", "failed", "cancelled")
FINISHED = ("done", "complete", "failed", "cancelled")
RESTART_PHASES = ("pxe", "task", "boot")  # a finished deployment that shows these is running again
MAX_TOKENS = 16  # per deployment: each hand-out of its task mints one; older ones lapse
MAX_PAGE = 500

_TABLES = """
CREATE TABLE IF NOT EXISTS machines (
    key TEXT PRIMARY KEY, uuid TEXT, serial TEXT, vendor TEXT, model TEXT, macs TEXT NOT NULL DEFAULT '[]',
    hostname TEXT, state TEXT NOT NULL DEFAULT 'none', postponed_until REAL, last_seen REAL NOT NULL,
    current TEXT);
CREATE TABLE IF NOT EXISTS deployments (
    n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, machine_key TEXT, rule TEXT, task TEXT,
    task_json TEXT, issued INTEGER NOT NULL DEFAULT 0, model TEXT,
    status TEXT NOT NULL DEFAULT 'running', phase TEXT, step TEXT, message TEXT, level TEXT,
    done INTEGER, total INTEGER, rate REAL, eta REAL, retries INTEGER NOT NULL DEFAULT 0,
    warnings INTEGER NOT NULL DEFAULT 0, error_code TEXT, error_message TEXT, dp TEXT,
    started REAL NOT NULL, updated REAL NOT NULL, finished REAL, events INTEGER NOT NULL DEFAULT 0,
    last_rank INTEGER NOT NULL DEFAULT -1, last_seq INTEGER NOT NULL DEFAULT -1);
CREATE INDEX IF NOT EXISTS deployments_machine ON deployments (machine_key, n);
CREATE INDEX IF NOT EXISTS deployments_status ON deployments (status, n);
CREATE INDEX IF NOT EXISTS deployments_failed ON deployments (error_code, n) WHERE status = 'failed';
CREATE TABLE IF NOT EXISTS events (
    deployment_id TEXT NOT NULL, id TEXT NOT NULL, rank INTEGER NOT NULL, seq INTEGER NOT NULL,
    time REAL NOT NULL, body TEXT NOT NULL, PRIMARY KEY (deployment_id, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_timeline ON events (deployment_id, rank, seq, time);
CREATE TABLE IF NOT EXISTS tokens (deployment_id TEXT NOT NULL, hash BLOB NOT NULL, issued REAL NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_deployment ON tokens (deployment_id, issued);
"""

_SUMMARY_COLUMNS = ("status", "phase", "step", "message", "level", "done", "total", "rate", "eta", "retries",
                    "warnings", "error_code", "error_message", "dp", "events", "last_rank", "last_seq", "finished")
_DEPLOYMENT_COLUMNS = ("id", "machine_key", "rule", "task", "started", "updated", "n", *_SUMMARY_COLUMNS)
_MACHINE_COLUMNS = ("key", "uuid", "serial", "vendor", "model", "macs", "hostname", "state", "postponed_until",
                    "last_seen", "current")


class StoreError(Exception):
    """The status database cannot be used: which file, and what to do about it."""


@dataclass(frozen=True)
class Summary:
    """A deployment's state as its events have left it (the columns the dashboard reads)."""

    status: str = "running"
    phase: str | None = None
    step: str | None = None
    message: str | None = None
    level: str | None = None
    done: int | None = None
    total: int | None = None
    rate: float | None = None
    eta: float | None = None
    retries: int = 0
    warnings: int = 0
    error_code: str | None = None
    error_message: str | None = None
    dp: str | None = None
    events: int = 0
    last_rank: int = -1
    last_seq: int = -1
    finished: float | None = None


def next_status(current: str, event: dict[str, Any]) -> str:
    """The status after ``event``, the newest so far (see the module's docstring)."""
    phase = event["phase"]
    if current == "cancelled" or phase == "cancelled":
        return "cancelled"
    if current == "complete" or phase == "complete":
        return "complete"
    if event.get("error") is not None or phase == "failed":
        return "failed"
    if phase == "done":
        return "done"
    if current in ("done", "failed") and phase not in RESTART_PHASES:
        return current
    return "running"


def advance(summary: Summary, event: dict[str, Any], now: float) -> Summary:
    """The summary once ``event`` (validated, not seen before) is stored; ``now`` stamps a finish."""
    rank = RANKS[event["source"]]
    counted = replace(summary, events=summary.events + 1, warnings=summary.warnings + len(event["warnings"]))
    if (rank, event["seq"]) <= (summary.last_rank, summary.last_seq):
        return counted  # late: kept in the timeline, but the summary already shows something newer
    status = next_status(summary.status, event)
    finished = summary.finished if status == summary.status else (now if status in FINISHED else None)
    error = event.get("error")
    return replace(
        counted, status=status, phase=event["phase"], step=event.get("step"), message=event["message"],
        level=event.get("level", "info"), done=event.get("done"), total=event.get("total"), rate=event.get("rate"),
        eta=event.get("eta"), retries=max(summary.retries, event.get("retries", 0)),
        error_code=error["code"] if error else summary.error_code,
        error_message=error["message"] if error else summary.error_message,
        dp=event.get("dp") or summary.dp, last_rank=rank, last_seq=event["seq"], finished=finished)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class StatusStore:
    """The SQLite status store at ``path`` (created if missing). Thread-safe; close() when done."""

    def __init__(self, path: Path | str, readers: int = 8) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._readers: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._max_readers = readers
        try:
            self._writer = self._connect()
            version = self._writer.execute("PRAGMA user_version").fetchone()[0]
            tables = self._writer.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
            if version not in (0, SCHEMA_VERSION) or (version == 0 and tables):
                raise StoreError(f"{self.path} is not a peagent status database of version {SCHEMA_VERSION} "
                                 f"(found version {version}): move it away or choose another with --db")
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.executescript(_TABLES)
            self._writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot use the status database {self.path}: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a power cut may lose the last commits, never the file
        db.execute("PRAGMA busy_timeout = 30000")
        return db

    def close(self) -> None:
        with self._lock:
            while True:
                try:
                    self._readers.get_nowait().close()
                except queue.Empty:
                    break
            self._writer.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        try:
            db = self._readers.get_nowait()
        except queue.Empty:
            db = self._connect()
        db.execute("BEGIN")  # one snapshot for every query of this read
        try:
            yield db
        finally:
            db.execute("COMMIT")
            if self._readers.qsize() < self._max_readers:
                self._readers.put(db)
            else:
                db.close()

    # -- writing ---------------------------------------------------------------------------------

    def ingest(self, events: list[dict[str, Any]], now: float | None = None) -> tuple[int, int]:
        """Store validated events, all or none; (accepted, duplicates). Summaries and machines follow."""
        now = time.time() if now is None else now
        with self._write() as db:
            return self._ingest(db, events, now)

    def _ingest(self, db: sqlite3.Connection, events: list[dict[str, Any]], now: float) -> tuple[int, int]:
        fresh: dict[str, list[dict[str, Any]]] = {}
        duplicates = 0
        for event in events:
            cursor = db.execute(
                "INSERT OR IGNORE INTO events (deployment_id, id, rank, seq, time, body) VALUES (?, ?, ?, ?, ?, ?)",
                (event["deployment_id"], event["id"], RANKS[event["source"]], event["seq"], event["time"],
                 json.dumps(event, separators=(",", ":"))))
            if cursor.rowcount:
                fresh.setdefault(event["deployment_id"], []).append(event)
            else:
                duplicates += 1
        for deployment_id, batch in fresh.items():
            self._summarise(db, deployment_id, batch, now)
        return len(events) - duplicates, duplicates

    def _summarise(self, db: sqlite3.Connection, deployment_id: str, batch: list[dict[str, Any]], now: float) -> None:
        batch.sort(key=lambda e: (RANKS[e["source"]], e["seq"]))
        identity = next((e["machine"] for e in reversed(batch) if e["machine"]), {})
        row = db.execute(f"SELECT {', '.join(_DEPLOYMENT_COLUMNS)} FROM deployments WHERE id = ?",
                         (deployment_id,)).fetchone()
        if row is None:
            # A deployment this server did not hand out (a static task): it starts with its first event.
            key = machine_key(identity.get("uuid"), identity.get("macs") or [])
            db.execute("INSERT INTO deployments (id, machine_key, model, started, updated) VALUES (?, ?, ?, ?, ?)",
                       (deployment_id, key, identity.get("model"), now, now))
            row = db.execute(f"SELECT {', '.join(_DEPLOYMENT_COLUMNS)} FROM deployments WHERE id = ?",
                             (deployment_id,)).fetchone()
        current = dict(zip(_DEPLOYMENT_COLUMNS, row, strict=True))
        summary = Summary(**{c: current[c] for c in _SUMMARY_COLUMNS})
        for event in batch:
            summary = advance(summary, event, now)
        values = [getattr(summary, c) for c in _SUMMARY_COLUMNS]
        db.execute(f"UPDATE deployments SET {', '.join(c + ' = ?' for c in _SUMMARY_COLUMNS)}, updated = ? "
                   "WHERE id = ?", (*values, now, deployment_id))
        key = current["machine_key"]
        if key is not None:
            self._note_machine(db, key, identity, now, current["n"], deployment_id)

    def _note_machine(self, db: sqlite3.Connection, key: str, identity: dict[str, Any], now: float, n: int,
                      deployment_id: str) -> None:
        """What an event says about its machine; the deployment becomes its current one if it is the newest."""
        macs = identity.get("macs")
        db.execute(
            "INSERT INTO machines (key, uuid, serial, vendor, model, macs, hostname, last_seen) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
            "uuid = coalesce(excluded.uuid, uuid), serial = coalesce(excluded.serial, serial), "
            "vendor = coalesce(excluded.vendor, vendor), model = coalesce(excluded.model, model), "
            "macs = CASE WHEN ? THEN excluded.macs ELSE macs END, "
            "hostname = coalesce(excluded.hostname, hostname), last_seen = excluded.last_seen",
            (key, _lower(identity.get("uuid")), identity.get("serial"), identity.get("vendor"),
             identity.get("model"), json.dumps(macs or []), identity.get("hostname"), now, bool(macs)))
        db.execute("UPDATE machines SET current = ? WHERE key = ? AND (current IS NULL OR "
                   "(SELECT n FROM deployments WHERE id = current) IS NULL OR "
                   "(SELECT n FROM deployments WHERE id = current) <= ?)", (deployment_id, key, n))

    def see_machine(self, identity: Identity, now: float | None = None) -> str:
        """Record that a machine asked (its identity as it gave it); its key."""
        key = identity.key
        if key is None:
            raise ValueError("a machine needs a MAC or a UUID to be known by")
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute(
                "INSERT INTO machines (key, uuid, serial, vendor, model, macs, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET uuid = coalesce(excluded.uuid, uuid), "
                "serial = coalesce(excluded.serial, serial), vendor = coalesce(excluded.vendor, vendor), "
                "model = coalesce(excluded.model, model), "
                "macs = CASE WHEN excluded.macs != '[]' THEN excluded.macs ELSE macs END, "
                "last_seen = excluded.last_seen",
                (key, identity.uuid, identity.serial, identity.vendor, identity.model, json.dumps(list(identity.macs)),
                 now))
        return key

    def issue(self, deployment_id: str, *, machine: str, rule: str, task_name: str, task: dict[str, Any],
              now: float | None = None) -> None:
        """A new deployment handed out to ``machine`` (a key): recorded, made current, the approval used up.

        ``task`` is stored as handed out but without its ``status`` section (that holds a token).
        """
        now = time.time() if now is None else now
        kept = {k: v for k, v in task.items() if k != "status"}
        with self._write() as db:
            db.execute("INSERT INTO deployments (id, machine_key, rule, task, task_json, issued, model, started, "
                       "updated) VALUES (?, ?, ?, ?, ?, 1, (SELECT model FROM machines WHERE key = ?), ?, ?)",
                       (deployment_id, machine, rule, task_name, json.dumps(kept), machine, now, now))
            db.execute("UPDATE machines SET current = ?, state = 'none', postponed_until = NULL WHERE key = ?",
                       (deployment_id, machine))

    def add_token(self, deployment_id: str, token: str, now: float | None = None) -> None:
        """Accept ``token`` for the deployment's events from now on (with its few latest others)."""
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute("INSERT INTO tokens (deployment_id, hash, issued) VALUES (?, ?, ?)",
                       (deployment_id, token_hash(token), now))
            db.execute("DELETE FROM tokens WHERE deployment_id = ? AND rowid NOT IN (SELECT rowid FROM tokens "
                       "WHERE deployment_id = ? ORDER BY issued DESC, rowid DESC LIMIT ?)",
                       (deployment_id, deployment_id, MAX_TOKENS))

    def server_event(self, deployment_id: str, phase: str, message: str, *, level: str = "info",
                     machine: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                     now: float | None = None) -> dict[str, Any]:
        """Record an event of the server's own (source "server", the next seq); the event."""
        now = time.time() if now is None else now
        with self._write() as db:
            return self._server_event(db, deployment_id, phase, message, level, machine or {}, data, now)

    def _server_event(self, db: sqlite3.Connection, deployment_id: str, phase: str, message: str, level: str,
                      machine: dict[str, Any], data: dict[str, Any] | None, now: float) -> dict[str, Any]:
        seq = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM events WHERE deployment_id = ? AND rank = 0",
                         (deployment_id,)).fetchone()[0]
        event = {"schema": SCHEMA, "id": f"server-{secrets.token_hex(12)}", "deployment_id": deployment_id,
                 "seq": seq, "source": "server", "time": now, "phase": phase, "step": None, "message": message,
                 "level": level, "machine": machine, "done": None, "total": None, "rate": None, "eta": None,
                 "retries": 0, "warnings": [], "error": None, "dp": None, "data": data}
        self._ingest(db, [event], now)
        return event

    def set_hold(self, key: str, state: str, postponed_until: float | None = None) -> bool:
        """An administrator's approve or postpone; False when there is no such machine."""
        with self._write() as db:
            return db.execute("UPDATE machines SET state = ?, postponed_until = ? WHERE key = ?",
                              (state, postponed_until, key)).rowcount > 0

    def mark_pending(self, key: str) -> None:
        """The machine asked for a deployment that waits for approval (unless an administrator already spoke)."""
        with self._write() as db:
            db.execute("UPDATE machines SET state = 'pending' WHERE key = ? AND state = 'none'", (key,))

    def cancel(self, key: str, now: float | None = None) -> bool:
        """Cancel the machine: no deployment until approved again, and its running one is cancelled."""
        now = time.time() if now is None else now
        with self._write() as db:
            row = db.execute("SELECT current FROM machines WHERE key = ?", (key,)).fetchone()
            if row is None:
                return False
            db.execute("UPDATE machines SET state = 'cancelled', postponed_until = NULL WHERE key = ?", (key,))
            current = row[0]
            if current is not None:
                status = db.execute("SELECT status FROM deployments WHERE id = ?", (current,)).fetchone()
                if status is not None and status[0] == "running":
                    self._server_event(db, current, "cancelled", "cancelled by an administrator", "warning", {}, None,
                                       now)
                    # The server's event sorts before the PE's: the status is set here, not by the newest event.
                    db.execute("UPDATE deployments SET status = 'cancelled', finished = ? WHERE id = ?",
                               (now, current))
            return True

    # -- checking tokens -------------------------------------------------------------------------

    def check_token(self, deployment_id: str, token: str) -> bool | None:
        """True or False for a deployment this server issued; None for one it did not (a static task)."""
        given = token_hash(token)
        with self._read() as db:
            row = db.execute("SELECT issued FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
            if row is None or not row[0]:
                return None
            hashes = [h for (h,) in db.execute("SELECT hash FROM tokens WHERE deployment_id = ?", (deployment_id,))]
        matched = False
        for stored in hashes:  # every one compared, so the time taken does not tell which matched
            matched |= hmac.compare_digest(stored, given)
        return matched

    # -- reading ---------------------------------------------------------------------------------

    def machine_view(self, key: str) -> MachineView:
        """What :func:`peagent.server.assign.decide` needs to know about the machine."""
        with self._read() as db:
            row = db.execute("SELECT state, postponed_until FROM machines WHERE key = ?", (key,)).fetchone()
            completed = frozenset(r for (r,) in db.execute(
                "SELECT DISTINCT rule FROM deployments WHERE machine_key = ? AND status IN ('done', 'complete') "
                "AND rule IS NOT NULL", (key,)))
            running = db.execute("SELECT id, rule FROM deployments WHERE machine_key = ? AND status = 'running' "
                                 "AND issued = 1 ORDER BY n DESC LIMIT 1", (key,)).fetchone()
        state, until = row if row is not None else ("none", None)
        return MachineView(state=state, postponed_until=until, completed_rules=completed,
                           running=(running[0], running[1]) if running else None)

    def machines(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every machine with its current deployment's summary, most recently seen first."""
        now = time.time() if now is None else now
        with self._read() as db:
            rows = db.execute(self._machine_query("ORDER BY m.last_seen DESC, m.key")).fetchall()
        return [self._machine(row, now) for row in rows]

    def machine(self, key: str, now: float | None = None) -> dict[str, Any] | None:
        """One machine, or None."""
        now = time.time() if now is None else now
        with self._read() as db:
            row = db.execute(self._machine_query("WHERE m.key = ?"), (key,)).fetchone()
        return None if row is None else self._machine(row, now)

    @staticmethod
    def _machine_query(tail: str) -> str:
        columns = [f"m.{c}" for c in _MACHINE_COLUMNS] + [f"d.{c}" for c in _DEPLOYMENT_COLUMNS]
        return f"SELECT {', '.join(columns)} FROM machines m LEFT JOIN deployments d ON d.id = m.current {tail}"

    def _machine(self, row: tuple[Any, ...], now: float) -> dict[str, Any]:
        m = dict(zip(_MACHINE_COLUMNS, row[:len(_MACHINE_COLUMNS)], strict=True))
        d = row[len(_MACHINE_COLUMNS):]
        state = effective_state(m["state"], m["postponed_until"], now)
        return {"key": m["key"], "uuid": m["uuid"], "serial": m["serial"], "vendor": m["vendor"],
                "model": m["model"], "macs": json.loads(m["macs"]), "hostname": m["hostname"], "state": state,
                "postponed_until": m["postponed_until"] if state == "postponed" else None,
                "last_seen": m["last_seen"], "deployment": None if d[0] is None else _summary(d)}

    def deployments_of(self, key: str, limit: int = MAX_PAGE) -> list[dict[str, Any]]:
        """A machine's deployments, newest first."""
        with self._read() as db:
            rows = db.execute(f"SELECT {', '.join(_DEPLOYMENT_COLUMNS)} FROM deployments WHERE machine_key = ? "
                              "ORDER BY n DESC LIMIT ?", (key, limit)).fetchall()
        return [_summary(r) for r in rows]

    def deployments(self, status: str | None = None, limit: int = 50,
                    before: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """A page of deployments, newest first, and the cursor of the next page (None at the end)."""
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if before is not None:
            where.append("n < ?")
            args.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._read() as db:
            rows = db.execute(f"SELECT {', '.join(_DEPLOYMENT_COLUMNS)} FROM deployments {clause} "
                              "ORDER BY n DESC LIMIT ?", (*args, limit + 1)).fetchall()
        page = rows[:limit]
        cursor = page[-1][_DEPLOYMENT_COLUMNS.index("n")] if len(rows) > limit else None
        return [_summary(r) for r in page], cursor

    def deployment(self, deployment_id: str) -> dict[str, Any] | None:
        with self._read() as db:
            row = db.execute(f"SELECT {', '.join(_DEPLOYMENT_COLUMNS)} FROM deployments WHERE id = ?",
                             (deployment_id,)).fetchone()
        return None if row is None else _summary(row)

    def timeline(self, deployment_id: str) -> tuple[dict[str, Any], list[str]] | None:
        """A deployment's summary and its events as stored JSON texts, in timeline order; None if unknown.

        The texts are what was stored, so a caller can join them into a response without decoding.
        """
        with self._read() as db:
            row = db.execute(f"SELECT {', '.join(_DEPLOYMENT_COLUMNS)} FROM deployments WHERE id = ?",
                             (deployment_id,)).fetchone()
            if row is None:
                return None
            bodies = [b for (b,) in db.execute("SELECT body FROM events WHERE deployment_id = ? "
                                               "ORDER BY rank, seq, time, id", (deployment_id,))]
        return _summary(row), bodies

    def events(self, deployment_id: str) -> list[dict[str, Any]]:
        """A deployment's events in timeline order (empty if unknown)."""
        found = self.timeline(deployment_id)
        return [] if found is None else [json.loads(b) for b in found[1]]

    def task(self, deployment_id: str) -> tuple[dict[str, Any], str] | None:
        """The task handed out for a deployment this server issued, and the deployment's status; else None."""
        with self._read() as db:
            row = db.execute("SELECT task_json, status FROM deployments WHERE id = ? AND issued = 1",
                             (deployment_id,)).fetchone()
        return None if row is None else (json.loads(row[0]), row[1])

    def errors(self, examples: int = 5) -> dict[str, list[dict[str, Any]]]:
        """Failed deployments grouped by error code (with a few examples), by model and by DP."""
        with self._read() as db:
            by_code = []
            for code, count in db.execute("SELECT error_code, count(*) FROM deployments WHERE status = 'failed' "
                                          "GROUP BY error_code ORDER BY count(*) DESC, error_code").fetchall():
                latest = db.execute("SELECT id, error_message FROM deployments WHERE status = 'failed' AND "
                                    "error_code IS ? ORDER BY n DESC LIMIT ?", (code, examples)).fetchall()
                by_code.append({"code": code or "unknown", "count": count, "message": latest[0][1],
                                "deployments": [i for i, _ in latest]})
            by_model = [{"model": model, "code": code or "unknown", "count": count}
                        for model, code, count in db.execute(
                            "SELECT model, error_code, count(*) FROM deployments WHERE status = 'failed' "
                            "GROUP BY model, error_code ORDER BY count(*) DESC, model, error_code")]
            by_dp = [{"dp": dp, "code": code or "unknown", "count": count}
                     for dp, code, count in db.execute(
                         "SELECT dp, error_code, count(*) FROM deployments WHERE status = 'failed' "
                         "GROUP BY dp, error_code ORDER BY count(*) DESC, dp, error_code")]
        return {"by_code": by_code, "by_model": by_model, "by_dp": by_dp}


def _lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else None


def _summary(row: tuple[Any, ...]) -> dict[str, Any]:
    d = dict(zip(_DEPLOYMENT_COLUMNS, row, strict=True))
    error = None if d["error_code"] is None else {"code": d["error_code"], "message": d["error_message"] or ""}
    return {"id": d["id"], "machine_key": d["machine_key"], "rule": d["rule"], "task": d["task"],
            "status": d["status"], "phase": d["phase"], "step": d["step"], "message": d["message"],
            "level": d["level"], "done": d["done"], "total": d["total"], "rate": d["rate"], "eta": d["eta"],
            "retries": d["retries"], "warnings": d["warnings"], "error": error, "dp": d["dp"],
            "started": d["started"], "updated": d["updated"], "finished": d["finished"], "events": d["events"]}
