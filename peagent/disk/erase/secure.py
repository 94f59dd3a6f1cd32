"""The drive's own erase: NVMe Format NVM and Sanitize (nvme-cli), ATA SECURITY ERASE UNIT (hdparm).

The method was chosen and checked while planning (:func:`~peagent.disk.erase.decide.choose_secure`);
here it is carried out, trusting the drive's state rather than the tools' exit status: a sanitize
is followed through its log (:func:`parse_sanitize_log`) until it ends, and an ATA erase counts as
done only when the drive has cleared the temporary password.
"""

from __future__ import annotations

import json
import re
import time

from peagent.disk.capabilities import AtaSecurity, EraseCaps, parse_hdparm_identify
from peagent.disk.erase.decide import ATA_PASSWORD, _frozen_remedy
from peagent.disk.erase.device import Progress, _Disk, _tool
from peagent.disk.tools import Runner
from peagent.errors import EraseError, EraseUnsupportedError

NVME_FORMAT_TIMEOUT_MS = 3 * 3600 * 1000  # nvme-cli's default (600 s) is short for a big user-data erase
SANITIZE_POLL = 5.0  # s
SANITIZE_TIMEOUT = 24 * 3600.0
SANITIZE_ACTIONS = {"block": 2, "overwrite": 3, "crypto": 4}  # nvme sanitize --sanact


def _nvme_format(disk: _Disk, caps: EraseCaps, method: str, runner: Runner, steps: list[str]) -> None:
    ses = 2 if method == "nvme-format-crypto" else 1
    argv = ["nvme", "format", disk.path, f"--namespace-id={caps.nvme_nsid}", f"--ses={ses}", "--force",
            f"--timeout={NVME_FORMAT_TIMEOUT_MS}"]
    _tool(runner, argv, f"NVMe Format NVM (SES={ses}) of {disk.path}", timeout=None)
    steps.append(f"NVMe Format NVM, Secure Erase Setting {ses}, of namespace {caps.nvme_nsid} on "
                 f"{caps.nvme_controller} ({' '.join(argv)})")


def _nvme_sanitize(disk: _Disk, caps: EraseCaps, method: str, runner: Runner, progress: Progress,
                   steps: list[str]) -> None:
    ctrl = caps.nvme_controller or ""
    kind = method.removeprefix("nvme-sanitize-")
    state, _ = _sanitize_state(ctrl, runner)
    if state == 2:  # a sanitize interrupted by a power loss resumes by itself: wait for it
        steps.append(f"a sanitize was already in progress on {ctrl}: waited for it instead of starting one")
    else:
        argv = ["nvme", "sanitize", ctrl, f"--sanact={SANITIZE_ACTIONS[kind]}"]
        if kind == "overwrite":
            argv += ["--owpass=1", "--ovrpat=0"]  # OWPASS 0 would mean 16 passes
        _tool(runner, argv, f"NVMe Sanitize ({kind}) of {ctrl}")
        steps.append(f"NVMe Sanitize, {kind} erase, of {ctrl} ({' '.join(argv)})")
    deadline = time.monotonic() + SANITIZE_TIMEOUT
    reported = 0
    while True:
        state, fraction = _sanitize_state(ctrl, runner)
        done = int(disk.size * fraction) if state == 2 else disk.size
        if done > reported:
            progress(done - reported)
            reported = done
        if state in (1, 4):  # completed (4: completed without deallocation)
            return
        if state == 3:
            raise EraseError(f"NVMe Sanitize of {ctrl} failed: the controller stays in its sanitize "
                             "failure mode until a sanitize succeeds; run the erase again")
        if state != 2:
            raise EraseError(f"NVMe Sanitize of {ctrl}: the sanitize log shows no sanitize (status {state})")
        if time.monotonic() > deadline:
            raise EraseError(f"NVMe Sanitize of {ctrl} did not complete in {SANITIZE_TIMEOUT / 3600:.0f} h")
        time.sleep(SANITIZE_POLL)


def parse_sanitize_log(text: str) -> tuple[int, float]:
    """``nvme sanitize-log -o json`` -> (status, progress 0..1). Status (SSTAT bits 2:0): 0 never
    sanitized, 1 completed, 2 in progress, 3 failed, 4 completed without deallocation. The JSON's
    shape changed across nvme-cli versions (SSTAT as a number, or an object whose status reads
    "(1) ..."), so both are read."""
    doc = json.loads(text)
    log = next((v for v in doc.values() if isinstance(v, dict) and "sprog" in v), doc) \
        if isinstance(doc, dict) else None
    if not isinstance(log, dict) or "sprog" not in log:
        raise ValueError("nvme sanitize-log JSON has no sprog")
    sstat = log.get("sstat")
    if isinstance(sstat, int):
        status = sstat & 0x7
    elif isinstance(sstat, dict):
        texts = [v for v in (*sstat.values(), *sstat.keys()) if isinstance(v, str)]
        m = next((m for t in texts if (m := re.match(r"\((\d+)\)", t))), None)
        if m is None:
            raise ValueError("nvme sanitize-log JSON has no readable status")
        status = int(m.group(1))
    else:
        raise ValueError("nvme sanitize-log JSON has no sstat")
    return status, int(log["sprog"]) / 65536  # SPROG is a numerator over 65536 (NVMe base spec)


def _sanitize_state(ctrl: str, runner: Runner) -> tuple[int, float]:
    result = _tool(runner, ["nvme", "sanitize-log", ctrl, "-o", "json"],
                   f"reading the sanitize log of {ctrl}")
    try:
        return parse_sanitize_log(result.stdout)
    except (ValueError, json.JSONDecodeError) as exc:
        raise EraseError(f"reading the sanitize log of {ctrl}: {exc}") from None


def _ata_state(device: str, runner: Runner) -> AtaSecurity:
    result = runner(["hdparm", "-I", device], timeout=60)
    try:
        return parse_hdparm_identify(result.stdout)
    except ValueError:
        raise EraseError(f"hdparm -I {device} no longer identifies the drive: {result.why()}") from None


def _ata_erase(disk: _Disk, caps: EraseCaps, method: str, runner: Runner, steps: list[str],
               notes: list[str]) -> None:
    dev = disk.path
    hdparm = ["hdparm", "--user-master", "u"]
    state = _ata_state(dev, runner)
    if state.frozen:  # the plan saw it unfrozen; it must not have changed since
        raise EraseUnsupportedError(_frozen_remedy(dev))
    if state.enabled:
        # Most likely our own password, left by an erase that was interrupted (power loss).
        if state.locked:
            runner([*hdparm, "--security-unlock", ATA_PASSWORD, dev], timeout=60)
            state = _ata_state(dev, runner)
            if state.locked:
                raise EraseError(f"{dev} is locked with a security password that is not peagent's "
                                 f"temporary one ({ATA_PASSWORD!r}): unlock it with its password first")
        steps.append(f"{dev} already had a security password set (an interrupted erase?): using "
                     f"{ATA_PASSWORD!r}")
    else:
        runner([*hdparm, "--security-set-pass", ATA_PASSWORD, dev], timeout=60)
        state = _ata_state(dev, runner)
        if not state.enabled:  # hdparm exits 0 even when the drive aborts the command
            raise EraseError(f"{dev} refused the temporary security password (SECURITY SET PASSWORD "
                             "was aborted): the drive cannot be security-erased")
        steps.append(f"set the temporary user password {ATA_PASSWORD!r} on {dev}")
    flag = "--security-erase-enhanced" if method == "ata-enhanced" else "--security-erase"
    result = runner([*hdparm, flag, ATA_PASSWORD, dev], timeout=None)
    state = _ata_state(dev, runner)
    if state.enabled:  # a completed SECURITY ERASE UNIT clears the password; it is still set
        runner([*hdparm, "--security-disable", ATA_PASSWORD, dev], timeout=60)
        raise EraseError(f"ATA SECURITY ERASE UNIT of {dev} did not complete ({result.why()}); peagent "
                         f"tried to remove its temporary password again (if the drive stays locked: "
                         f"hdparm --user-master u --security-disable {ATA_PASSWORD} {dev})")
    if not result.ok:
        notes.append(f"hdparm reported a failure ({result.why()}) but the drive cleared the password, "
                     "as a completed erase does; the read-back decides")
    steps.append(f"ATA SECURITY ERASE UNIT{' (enhanced)' if method == 'ata-enhanced' else ''} of {dev} "
                 "(hdparm); the drive cleared the temporary password")
