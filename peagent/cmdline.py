"""The PE's parameters, read from the kernel command line.

The PE is configured by whoever boots it (an iPXE script, a GRUB menu, a USB stick's config)
through ``peagent.*`` kernel parameters:

================================  =============================================================
``peagent.task=URL``              the task to run (else asked of the DPs' task API, or looked up
                                  as ``tasks/<mac>.json``, ``tasks/<uuid>.json``, ``tasks/default.json``)
``peagent.dp=URL[,URL...]``       distribution points, preferred first
``peagent.status=URL``            where to POST status events when the task's ``status.url`` does not
                                  say (without a token: docs/status.md)
``peagent.key=BASE64``            an ed25519 public key to trust for images (may be repeated)
``peagent.shell``                 on failure, a debug shell on the console instead of power-off
``peagent.run=BASE64``            run this shell command instead of a task (handled by /init)
================================  =============================================================

Values with spaces can be double-quoted, as the kernel allows. A malformed value is a
:class:`~peagent.errors.TaskError` naming the parameter, raised before anything is touched.
"""

from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass

from peagent.errors import TaskError
from peagent.image.sign import PublicKey
from peagent.task import check_http_url

KNOWN = ("peagent.task", "peagent.dp", "peagent.status", "peagent.shell", "peagent.run", "peagent.key")


@dataclass(frozen=True)
class BootParams:
    task: str | None = None
    dps: tuple[str, ...] = ()
    status: str | None = None
    shell: bool = False
    keys: tuple[str, ...] = ()


def parse_cmdline(text: str) -> BootParams:
    values: dict[str, str | None] = {}
    keys: list[str] = []
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise TaskError("kernel command line", "balanced quotes", str(exc)) from None
    for word in words:
        key, sep, value = word.partition("=")
        if key.startswith("peagent."):
            if key not in KNOWN:
                # A misspelt parameter would otherwise be ignored, and the PE do something else.
                close = difflib.get_close_matches(key, KNOWN, n=1)
                raise TaskError(key, f"a known parameter: {', '.join(KNOWN)}",
                                "an unknown one" + (f" (did you mean {close[0]}?)" if close else ""))
            if key == "peagent.key":
                PublicKey.from_text(value, "peagent.key")  # refuse a malformed key now, naming the parameter
                keys.append(value)
            values[key] = value if sep else None
    task = values.get("peagent.task")
    if task is not None:
        check_http_url(task, "peagent.task")
    dps = tuple(
        check_http_url(url, "peagent.dp") for url in (values.get("peagent.dp") or "").split(",") if url
    )
    status = values.get("peagent.status")
    if status is not None:
        check_http_url(status, "peagent.status")
    return BootParams(task=task, dps=dps, status=status, shell="peagent.shell" in values, keys=tuple(keys))
