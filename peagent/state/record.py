"""The deployment record: what was deployed on this machine, kept in the new OS itself.

Every deployment leaves one small JSON file in the OS it wrote::

    Linux    /var/lib/peagent/deployment.json
    Windows  C:\\ProgramData\\peagent\\deployment.json

holding the deployment id, the image (name, version, and a digest that names its exact bytes:
the manifest's sha256 for a peagent image, the image's sha256 otherwise), when, the agent's
version, the status URL the first boot reports to, and the state the OS was given (secrets
never: :meth:`MachineState.public`), and the deployment's status events (schema 1, peagent.status)
up to the moment it was written, so the machine carries its own history.

It also makes redeploys cheap: a task with ``"skip_if_deployed": true`` reads the record from
the disk before anything is written, and does nothing when the image there is the one asked for
(same digest). :func:`find_record` looks, read-only, in every partition that could hold an OS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peagent import __version__
from peagent.inplace.detect import look_into, read_small
from peagent.inventory import Partition

RECORD_FORMAT = 1
RECORD_PATHS = {"linux": "var/lib/peagent/deployment.json", "windows": "ProgramData/peagent/deployment.json"}
RECORD_LIMIT = 4 << 20  # bytes: a record with its events is small
EVENTS_BUDGET = 2 << 20  # bytes of events a record keeps (well within RECORD_LIMIT, which a reader enforces)


@dataclass(frozen=True)
class ImageIdentity:
    name: str
    version: str | None
    digest: str | None  # "sha256:<hex>": the manifest's for a peagent image, else the image's own bytes'; None: unknown

    def describe(self) -> str:
        digest = f"{self.digest[:19]}..." if self.digest else "no digest"
        return f"{self.name}{' ' + self.version if self.version else ''} ({digest})"


@dataclass(frozen=True)
class DeploymentRecord:
    deployment_id: str
    image: ImageIdentity
    deployed_at: str  # ISO 8601, UTC
    agent_version: str = __version__
    status_url: str | None = None
    state: dict[str, Any] = field(default_factory=dict)  # MachineState.public()
    events: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> bytes:
        doc = {"format": RECORD_FORMAT, **asdict(self), "events": list(self.events)}
        return (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> DeploymentRecord:
        """Parse a record; ValueError when it is not one this agent can read."""
        try:
            doc = json.loads(data)
            if doc.get("format") != RECORD_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, expected {RECORD_FORMAT}")
            image = ImageIdentity(**doc["image"])
            return cls(deployment_id=str(doc["deployment_id"]), image=image, deployed_at=str(doc["deployed_at"]),
                       agent_version=str(doc.get("agent_version", "")), status_url=doc.get("status_url"),
                       state=dict(doc.get("state") or {}), events=tuple(doc.get("events") or ()))
        except (AttributeError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a deployment record: {exc}") from None


def new_record(deployment_id: str, image: ImageIdentity, *, status_url: str | None,
               state: dict[str, Any], events: Sequence[dict[str, Any]] = ()) -> DeploymentRecord:
    """A record of this deployment now; ``events`` are its status events so far (peagent.status)."""
    return DeploymentRecord(deployment_id=deployment_id, image=image,
                            deployed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            status_url=status_url, state=state, events=fit_events(events, EVENTS_BUDGET))


def fit_events(events: Sequence[dict[str, Any]], budget: int) -> tuple[dict[str, Any], ...]:
    """The events, within ``budget`` bytes of JSON: when they are too many, a transfer's intermediate
    progress events go first (its last one stays), then the oldest events."""
    def size(event: dict[str, Any]) -> int:
        return len(json.dumps(event)) + 8  # with the record's indentation, roughly

    kept = list(events)
    if sum(map(size, kept)) <= budget:
        return tuple(kept)
    last_of_phase = {e.get("phase"): i for i, e in enumerate(kept) if e.get("done") is not None}
    kept = [e for i, e in enumerate(kept) if e.get("done") is None or last_of_phase.get(e.get("phase")) == i]
    total, first = sum(map(size, kept)), 0
    while first < len(kept) and total > budget:
        total -= size(kept[first])
        first += 1
    return tuple(kept[first:])


@dataclass(frozen=True)
class FoundRecord:
    partition: Partition
    record: DeploymentRecord | None  # None: a file was there but unreadable (``problem``)
    problem: str = ""


def read_record(root: Path) -> DeploymentRecord | None:
    """The record in a mounted OS tree, if there is one; ValueError when there is a broken one."""
    for rel in RECORD_PATHS.values():
        data = read_small(root, rel, nocase=rel.startswith("ProgramData"), limit=RECORD_LIMIT)
        if data is not None:
            return DeploymentRecord.from_json(data)
    return None


def find_records(partitions: Sequence[Partition], parent: Path | None = None) -> list[FoundRecord]:
    """The records on a disk's partitions, each partition mounted read-only to look."""
    def read(_: Partition, root: Path) -> tuple[DeploymentRecord | None, str]:
        try:
            return read_record(root), ""
        except ValueError as exc:
            return None, str(exc)

    found = []
    for p, got, _ in look_into(partitions, read, parent):
        if got is None:
            continue  # not mountable: holds no record we could have written
        record, broken = got
        if broken:
            found.append(FoundRecord(p, None, broken))
        elif record is not None:
            found.append(FoundRecord(p, record))
    return found


def already_deployed(found: Sequence[FoundRecord], image: ImageIdentity) -> FoundRecord | None:
    """The record that shows ``image`` is what this disk already runs, if one does."""
    if image.digest is None:
        return None  # nothing names its content: never "the same"
    for f in found:
        if f.record is not None and f.record.image.digest == image.digest:
            return f
    return None
