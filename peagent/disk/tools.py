"""Running the external disk tools (wipefs, blkid, udevadm, nvme, hdparm) behind one interface.

Probing and erasing call a :data:`Runner` rather than :mod:`subprocess` directly, so that unit tests
can feed the outputs captured from real devices (and QEMU's) instead of needing the devices. A
runner never raises for a failed command: it returns a :class:`ToolResult` whose ``returncode``
is the tool's, or :data:`NOT_INSTALLED` when the program is absent from the PE, and the caller
decides what a failure means (a missing ``hdparm`` while probing is a reason, while erasing an error).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

NOT_INSTALLED = 127  # the shell's status for "command not found"
TIMED_OUT = 124  # timeout(1)'s status


@dataclass(frozen=True)
class ToolResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        """A one-line account of a failure, for error messages."""
        if self.returncode == NOT_INSTALLED:
            return f"{self.argv[0]} is not installed"
        if self.returncode == TIMED_OUT:
            return f"{self.argv[0]} timed out"
        detail = (self.stderr.strip() or self.stdout.strip()).splitlines()
        tail = detail[-1] if detail else "no output"
        return f"{' '.join(self.argv)} failed (status {self.returncode}): {tail}"


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, timeout: float | None = ...) -> ToolResult: ...


def run_tool(argv: Sequence[str], *, timeout: float | None = 120) -> ToolResult:
    """Run one command, capturing its output; ``timeout=None`` for the long erase commands."""
    args = tuple(argv)
    try:
        proc = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return ToolResult(args, NOT_INSTALLED, "", f"{args[0]}: command not found")
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return ToolResult(args, TIMED_OUT, out, f"{args[0]}: no answer after {timeout} s")
    return ToolResult(args, proc.returncode, proc.stdout, proc.stderr)
