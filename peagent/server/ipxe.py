"""The per-machine iPXE script: ``GET /boot.ipxe?mac=..&uuid=..`` answered by what the rules decided.

iPXE (netboot/ipxe/peagent.ipxe) chains the DP's ``boot.ipxe`` with the machine's identity in the
query. A static DP ignores the query and sends its one script, which boots the PE. ``peagent
serve`` decides first (peagent.server.assign) and writes a script for the answer:

* **deploy**: ``set peagent-task <the API's URL of this deployment's task>``, then the DP's own
  ``DIR/boot.ipxe`` (without its ``#!ipxe`` line), so the script the site ships still boots the PE
  and passes the task on the kernel line;
* **pending** or **postponed**: say why, ``sleep``, and chain the same URL again (``--replace``, so
  the waiting does not nest one script in another every round), until the answer changes;
* **none**, **refused** or **cancelled**: say why and ``exit 0``; peagent.ipxe then leaves iPXE,
  and the firmware boots the next device (normally the disk);
* **static** (no assignments configured and no task file for the machine): the DP's own
  ``boot.ipxe`` as it is, as a static DP would send it: the PE boots and decides for itself.

Every text put into a script is reduced to harmless characters first: an iPXE line is expanded
(``${...}``) and split on ``||`` and ``&&`` before it runs, so a machine's model string must never
become a command.
"""

from __future__ import annotations

import re

from peagent.server.assign import Decision

_UNSAFE = re.compile(r"[^A-Za-z0-9 .,:;_/()+=@'!?%*-]")
_MAX_SAY = 200
_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~:/?=&%+-]*)?")


class ScriptError(ValueError):
    """A URL meant for a script holds characters iPXE would interpret."""


def say(text: str) -> str:
    """``text`` made safe for an iPXE ``echo``: no ``$``, ``|``, ``&``, ``#``, no line breaks."""
    return _UNSAFE.sub("?", text)[:_MAX_SAY]


def check_url(url: str) -> str:
    """``url`` if an iPXE script can carry it as it is (http(s), no spaces, no ``$``), else ScriptError."""
    if not _URL.fullmatch(url):
        raise ScriptError(f"not a URL an iPXE script can carry as it is (http or https, no spaces or $): "
                          f"{url[:120]!r}")
    return url


def render(decision: Decision, *, task_url: str | None, again_url: str, static: str | None,
           deployment_id: str | None = None) -> str:
    """The script for ``decision``.

    ``task_url``: where the PE fetches its task (deploy); ``again_url``: the request's own URL, to
    ask again (pending, postponed); ``static``: the DP's ``boot.ipxe``, or None when it has none.
    """
    lines = ["#!ipxe", f"# peagent serve: {say(decision.kind)}: {say(decision.reason)}"]
    if decision.kind in ("deploy", "static"):
        if static is None:
            lines += [f"echo peagent: {say(decision.reason)}",
                      "echo peagent: this DP has no boot.ipxe to boot the PE with (see netboot/ipxe/boot.ipxe)",
                      "exit 1"]
            return "\n".join(lines) + "\n"
        if decision.kind == "deploy":
            if task_url is None:
                raise ScriptError("a deploy script needs the task's URL")
            lines += [f"echo peagent: deployment {say(deployment_id or '?')} ({say(decision.reason)})",
                      f"set peagent-task {check_url(task_url)}"]
        body = static.splitlines()
        if body and body[0].startswith("#!ipxe"):
            body = body[1:]
        return "\n".join(lines + body) + "\n"
    if decision.kind in ("pending", "postponed"):
        wait = max(1, int(decision.retry_after or 60))
        lines += [":wait",
                  f"echo peagent: {say(decision.reason)}",
                  f"echo peagent: asking the DP again in {wait} s",
                  f"sleep {wait} ||",
                  f"chain --replace --autofree {check_url(again_url)} || goto wait"]
        return "\n".join(lines) + "\n"
    lines += [f"echo peagent: {say(decision.reason)}",
              "echo peagent: nothing to deploy here: leaving iPXE, the firmware boots the next device",
              "exit 0"]
    return "\n".join(lines) + "\n"
