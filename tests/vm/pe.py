"""Helpers for booting the PE in the bench: kernel parameters, commands, disk images."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from tests.vm.qemu import VM, Drive, Machine

CONSOLE = "console=ttyS0,115200 panic=-1 quiet"
BOOT_TIMEOUT = 180  # s: TCG boots take 15-40 s; leave room for a loaded CI machine


def run_param(command: str) -> str:
    """The peagent.run parameter that makes the PE run ``command`` and power off."""
    return "peagent.run=" + base64.b64encode(command.encode()).decode()


def direct(pe: Path, params: str = "", drives: list[Drive] | None = None, **kwargs: object) -> Machine:
    """A machine booting the PE's kernel and initrd directly (the fastest way in)."""
    return Machine(kernel=pe / "vmlinuz", initrd=pe / "initrd.zst", append=f"{CONSOLE} {params}".strip(),
                   drives=drives or [], **kwargs)  # type: ignore[arg-type]


def blank_disk(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def exit_status(vm: VM, timeout: float = BOOT_TIMEOUT) -> int:
    """Wait for the PE's final "peagent-exit: N" line and return N."""
    return int(vm.expect(r"peagent-exit: (\d+)\n", timeout).group(1))


def json_between(vm: VM, marker: str, timeout: float = BOOT_TIMEOUT) -> object:
    """A JSON document the guest printed between "<marker>-begin" and "<marker>-end" lines."""
    m = vm.expect(rf"(?s)^{marker}-begin\s*\n(.*?)\n{marker}-end", timeout)
    return json.loads(re.sub(r"\n\[ *\d+\.\d+\] [^\n]*", "", m.group(1)))
