"""The task's erase object: ``"zero"``, or ``{"mode": "secure", "method": "auto", "samples": 64}``.

:func:`parse_erase` reads it into an :class:`EraseSpec`, or raises a
:class:`~peagent.errors.TaskError` naming the wrong field. The modes and methods are explained in
:mod:`peagent.disk.erase`; ``AUTO_ORDER`` is the order in which ``auto`` tries the secure methods.
"""

from __future__ import annotations

from dataclasses import dataclass

from peagent.errors import TaskError, describe
from peagent.schema import Fields

MODES = ("metadata", "discard", "zero", "secure")
AUTO_ORDER = ("nvme-format-crypto", "nvme-format", "nvme-sanitize-crypto", "nvme-sanitize-block",
              "ata-enhanced", "ata")
SECURE_METHODS = ("auto", *AUTO_ORDER, "nvme-sanitize-overwrite")
NVME_METHODS = tuple(m for m in SECURE_METHODS if m.startswith("nvme-"))
ATA_METHODS = ("ata-enhanced", "ata")
DEFAULT_SAMPLES = 64
MAX_SAMPLES = 4096


@dataclass(frozen=True)
class EraseSpec:
    mode: str
    method: str = "auto"  # only for mode "secure"
    samples: int = DEFAULT_SAMPLES


def parse_erase(obj: object, field: str = "erase") -> EraseSpec:
    """``"zero"`` or ``{"mode": "secure", "method": "auto", "samples": 64}`` -> EraseSpec."""
    modes = ", ".join(MODES)
    either = f"one of {modes}, or an object with mode, method and samples"
    if isinstance(obj, str):
        if obj not in MODES:
            raise TaskError(field, either, describe(obj))
        return EraseSpec(mode=obj)
    if not isinstance(obj, dict):
        raise TaskError(field, either, describe(obj))
    f = Fields(obj, field)
    mode = f.get("mode", str, f"one of {modes}")
    if mode not in MODES:
        raise TaskError(f.field("mode"), f"one of {modes}", describe(mode))
    method = f.get("method", str, f"one of {', '.join(SECURE_METHODS)}", None)
    if method is not None:
        if mode != "secure":
            raise TaskError(f.field("method"), 'no method: only mode "secure" has methods', describe(method))
        if method not in SECURE_METHODS:
            raise TaskError(f.field("method"), f"one of {', '.join(SECURE_METHODS)}", describe(method))
    samples = f.get("samples", int, f"a number of sample blocks to read back, 0 to {MAX_SAMPLES}",
                    DEFAULT_SAMPLES)
    if not 0 <= samples <= MAX_SAMPLES:
        raise TaskError(f.field("samples"), f"a number of sample blocks to read back, 0 to {MAX_SAMPLES}",
                        describe(samples))
    f.done()
    return EraseSpec(mode=mode, method=method or "auto", samples=samples)
