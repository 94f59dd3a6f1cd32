"""The captured state as a document, so that it survives the wipe of the disk it was read from.

Capture happens before the old OS is destroyed; the state is needed after the new OS is written.
In between, the agent may crash or be restarted, so the capture is saved at once:

* in the PE's memory (``/run/peagent/captured-<deployment>.json``, mode 0600, secrets included:
  RAM on the machine itself, gone at power off), from which a rerun of the same deployment takes
  it instead of looking for an old OS that is no longer there;
* on the DP, its public part (no secrets), as the ``capture`` status event's ``data``;
* finally in the new OS, inside the deployment record (public part).

:func:`dump` and :func:`load` round-trip a :class:`Captured` exactly, secrets included.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from peagent.state.model import Captured, DomainJoin, HostKey, Interface, MachineState, Secret

DOCUMENT_FORMAT = 1
_SECRETS = ("product_key", "admin_password", "root_password_hash")


def dump(captured: Captured) -> dict[str, Any]:
    state = captured.state
    doc: dict[str, Any] = {name: getattr(state, name) for name in state.set_fields()}
    for name in _SECRETS:
        if name in doc:
            doc[name] = doc[name].reveal()
    if state.domain is not None:
        d = state.domain
        doc["domain"] = {"domain": d.domain, "username": d.username, "ou": d.ou,
                         "password": d.password.reveal() if d.password else None}
    if state.interfaces:
        doc["interfaces"] = [dict(vars(i)) for i in state.interfaces]
    if state.ssh_host_keys:
        doc["ssh_host_keys"] = [{"kind": k.kind, "private": k.private.reveal(), "public": k.public}
                                for k in state.ssh_host_keys]
    for name in ("ssh_authorized_keys", "first_boot_commands"):
        if name in doc:
            doc[name] = list(doc[name])
    return {"format": DOCUMENT_FORMAT, "os": captured.os, "source": captured.source,
            "notes": list(captured.notes), "state": doc}


def load(doc: dict[str, Any]) -> Captured:
    """A Captured from :func:`dump`'s output; ValueError when it is not one."""
    try:
        if doc.get("format") != DOCUMENT_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}")
        s = dict(doc["state"])
        for name in _SECRETS:
            if name in s:
                s[name] = Secret(s[name])
        if "domain" in s:
            d = s["domain"]
            s["domain"] = DomainJoin(domain=d["domain"], username=d.get("username"), ou=d.get("ou"),
                                     password=Secret(d["password"]) if d.get("password") else None)
        if "interfaces" in s:
            s["interfaces"] = tuple(Interface(**{k: tuple(v) if isinstance(v, list) else v for k, v in i.items()})
                                    for i in s["interfaces"])
        if "ssh_host_keys" in s:
            s["ssh_host_keys"] = tuple(HostKey(k["kind"], Secret(k["private"]), k["public"])
                                       for k in s["ssh_host_keys"])
        for name in ("ssh_authorized_keys", "first_boot_commands"):
            if name in s:
                s[name] = tuple(s[name])
        return Captured(os=str(doc["os"]), source=str(doc["source"]), state=MachineState(**s),
                        notes=tuple(doc.get("notes") or ()))
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a captured-state document: {exc}") from None


def save(captured: Captured, path: Path) -> None:
    """Written 0600 and renamed into place: a reader sees the whole document or none."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dump(captured), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def restore(path: Path) -> Captured | None:
    """The capture saved at ``path`` by an earlier run, if any."""
    try:
        return load(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: {exc}") from None
