"""A deployment from start to finish: who am I, what is my task, where does it go, write, verify.

The order is the safety argument. Everything that can refuse (fetching and validating the task,
checking that it is meant for this machine, choosing the target, laying out its partitions,
checking that the image fits and what data would be destroyed) happens before the first byte is
written; then the partitions are made and the image is streamed and verified; only a verified
image is reported as deployed. An in-place re-image (peagent.inplace) follows the same order:
the file images are loaded and checked and the OS partition is found (looking into the
partitions read-only) before its old OS is deleted. What happens after (reboot, power off) is returned to
the caller, which in the PE is /init: power is PID 1's business. Before returning (done or
failed) the deploy gives its status events a last chance to reach the status server
(peagent.status), since the PE powers off or reboots right after.

Without a task named, the task is looked up on the DPs (:func:`load_task`): first a DP's API
``GET api/v1/task?mac=..&uuid=..`` (``peagent serve``), whose answer is a decision: the task, nothing
to do, wait for approval (poll again after ``retry_after``), or refused/cancelled. A DP without
that API (a plain static server: 404 without a decision) has the task files instead:
``tasks/<mac-with-dashes>.json`` for each MAC, ``tasks/<uuid>.json``, then ``tasks/default.json``.
Once a DP has answered with a decision, its rules are authoritative: the static files are never
a fallback for a decision (a machine awaiting approval must not get the default task).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import tenacity

from peagent.disk.erase import erase, expected_data, progress_total
from peagent.disk.filesystem import make_filesystems
from peagent.disk.partition import apply_layout
from peagent.drivers import step as drivers_step
from peagent.errors import FetchError, ImageError, InplaceError, PeagentError, TaskError, TaskRefusedError
from peagent.fetch import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    TRANSIENT,
    NotFoundError,
    brief,
    candidate_urls,
    fetch_bytes,
    new_session,
)
from peagent.files import wim
from peagent.files.stack import load_stack
from peagent.image.checksums import file_sha256
from peagent.image.job import FilesSource, WimSource, prepare_image
from peagent.image.sign import trusted_keys
from peagent.image.thirdparty import StreamSource
from peagent.inplace.detect import Surveyed, choose, survey
from peagent.inplace.reimage import reimage
from peagent.inplace.windows import reimage_windows
from peagent.inventory import Inventory, Partition, collect
from peagent.newos import Context, capture_old, finish, skip_if_deployed
from peagent.plan import Plan, make_plan
from peagent.progress import Progress
from peagent.state.record import ImageIdentity
from peagent.status import Reporter
from peagent.status.reporter import FLUSH_SECONDS
from peagent.status.sender import failure_text
from peagent.task import Task, parse_task

log = logging.getLogger("peagent")
TASK_LIMIT = 1 << 20  # bytes; a task is a small document
TASK_API = "api/v1/task"
TASK_WAIT = 4 * 3600.0  # seconds a machine waits for an administrator's approval before giving up
RETRY_AFTER_DEFAULT = 30.0  # seconds, when a DP's "wait" answer does not say
RETRY_AFTER_RANGE = (1.0, 600.0)  # a DP's retry_after is kept within this: never a busy loop, never a day
API_ATTEMPTS = 3  # tries per DP before it counts as unreachable


@dataclass(frozen=True)
class DeployOptions:
    task: str | None  # URL or path of the task; None: look it up on the DPs
    dps: tuple[str, ...] = ()
    status: str | None = None
    keys: tuple[str, ...] = ()  # public keys given at boot (peagent.key=), trusted besides /etc/peagent/keys
    journal_dir: Path | None = None  # the image writer's and the status events' journals (the PE: /run/peagent)
    # Set the firmware's boot entries (and load kexec): only in the PE, where the firmware is the
    # deployed machine's. Off elsewhere, so that writing a stick from a workstation never edits the
    # workstation's own boot order.
    firmware: bool = False
    task_wait: float = TASK_WAIT  # seconds to wait for approval of a pending (or postponed) deployment
    flush_seconds: float = FLUSH_SECONDS  # how long the last status flush may take before power off/reboot


def task_lookup_refs(inventory: Inventory) -> list[str]:
    """The task files a static DP may hold for this machine, in order: each MAC, its UUID, then the default."""
    refs = [f"tasks/{mac.lower().replace(':', '-')}.json" for mac in inventory.macs()]
    if inventory.dmi.product_uuid:
        refs.append(f"tasks/{inventory.dmi.product_uuid.lower()}.json")
    return [*refs, "tasks/default.json"]


def task_query(inventory: Inventory) -> str:
    """The query string of ``GET api/v1/task``: every MAC, then uuid, serial, vendor and model when known."""
    dmi = inventory.dmi
    pairs = [("mac", mac.lower()) for mac in inventory.macs()]
    for key, value in (("uuid", dmi.product_uuid and dmi.product_uuid.lower()), ("serial", dmi.product_serial),
                       ("vendor", dmi.sys_vendor), ("model", dmi.product_name)):
        if value:
            pairs.append((key, value))
    return urlencode(pairs)


def machine_identity(inventory: Inventory) -> dict[str, Any]:
    """The machine as status events name it (docs/status.md: macs, uuid, serial, vendor, model)."""
    dmi = inventory.dmi
    return {"macs": [mac.lower() for mac in inventory.macs()],
            "uuid": dmi.product_uuid.lower() if dmi.product_uuid else None, "serial": dmi.product_serial,
            "vendor": dmi.sys_vendor, "model": dmi.product_name}


@dataclass(frozen=True)
class Decision:
    """What a DP's answer to ``GET api/v1/task`` means for this machine.

    ``kind``: "task" (the body is the task), "none" (nothing to do), "wait" (ask again after
    ``retry_after`` seconds), "refused" (``decision`` says refused or cancelled), "static" (no such
    API here: look for the task files) or "unexpected" (an answer that is none of these).
    """

    kind: str
    decision: str = ""
    retry_after: float = RETRY_AFTER_DEFAULT
    detail: str = ""


def task_decision(status: int, body: bytes) -> Decision:
    """Read a DP's answer to ``GET api/v1/task`` (pure: the status code and the body)."""
    if status == 200:
        return Decision("task")
    doc = _json_object(body)
    decision = doc.get("decision") if doc is not None else None
    detail = _detail(doc)
    if status == 404:
        # A decision in JSON is the API's "nothing for you"; any other 404 is a server without the API.
        return Decision("none", "none", detail=detail) if decision == "none" else Decision("static")
    if status == 409 and decision in ("pending", "postponed"):
        return Decision("wait", decision, _retry_after(doc.get("retry_after") if doc else None), detail)
    if status == 403 and decision in ("refused", "cancelled"):
        return Decision("refused", decision, detail=detail)
    if status in (403, 405, 501):  # a static server that forbids or cannot serve the path: no API here
        return Decision("static")
    return Decision("unexpected", detail=f"HTTP {status}" + (f": {detail}" if detail else ""))


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _detail(doc: dict[str, Any] | None) -> str:
    """The DP's own explanation, when its answer has one (a reason or message), cut short."""
    for key in ("reason", "message", "error"):
        value = doc.get(key) if doc is not None else None
        if isinstance(value, str) and value:
            return brief(Exception(value))
    return ""


def _retry_after(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return RETRY_AFTER_DEFAULT
    low, high = RETRY_AFTER_RANGE
    return min(high, max(low, float(value)))


def load_task(ref: str | None, dps: tuple[str, ...], inventory: Inventory, *, reporter: Reporter | None = None,
              wait: float = TASK_WAIT, sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic,
              session: requests.Session | None = None) -> tuple[Task, str]:
    """Fetch and validate the task; returns it and where it came from (see the module for the lookup)."""
    if ref is not None and "://" not in ref and Path(ref).exists():
        return parse_task(Path(ref).read_bytes()), ref
    if ref is None and not dps:
        raise TaskError("peagent.task", "a task URL, or DPs (peagent.dp) to look the task up on",
                        "neither")
    if ref is not None:
        urls = candidate_urls(ref, dps)
        return parse_task(fetch_bytes(urls, TASK_LIMIT)), urls[0]
    asked = TaskAsker(inventory, reporter, wait=wait, sleep=sleep, clock=clock, session=session)
    found = asked.ask(dps)
    if found is not None:
        return found
    refs = task_lookup_refs(inventory)
    for candidate in refs:
        urls = candidate_urls(candidate, dps)
        try:
            data = fetch_bytes(urls, TASK_LIMIT)
        except NotFoundError:
            continue
        return parse_task(data), urls[0]
    raise NotFoundError(f"no task for this machine on the DPs (looked for {', '.join(refs)})")


class TaskAsker:
    """Asks the DPs' task API for this machine's task, waiting while its deployment awaits approval."""

    def __init__(self, inventory: Inventory, reporter: Reporter | None, *, wait: float,
                 sleep: Callable[[float], None], clock: Callable[[], float],
                 session: requests.Session | None = None) -> None:
        self.query = task_query(inventory)
        self.reporter = reporter
        self.wait = wait
        self.sleep = sleep
        self.clock = clock
        self.session = session or new_session()

    def ask(self, dps: Sequence[str]) -> tuple[Task, str] | None:
        """The task from the first DP that decides; None when no DP has the API (look for the files)."""
        unreachable = []
        for dp in dps:
            url = urljoin(dp if dp.endswith("/") else dp + "/", TASK_API) + "?" + self.query
            try:
                found = self._ask_one(dp, url)
            except FetchError as exc:
                unreachable.append(f"{dp}: {exc}")
                continue
            if found is not None:
                return found
        if unreachable and len(unreachable) == len(dps):
            raise FetchError(f"cannot reach any DP to ask for this machine's task ({'; '.join(unreachable)})")
        return None

    def _ask_one(self, dp: str, url: str) -> tuple[Task, str] | None:
        started = self.clock()
        last: Decision | None = None  # once the DP said "wait", it decides: an outage is waited out, not a fallback
        while True:
            try:
                status, body = self._get(url)
            except FetchError:
                if last is None:
                    raise
                decision = Decision("wait", last.decision, last.retry_after, "the DP does not answer now")
            else:
                decision = task_decision(status, body)
            if decision.kind == "task":
                return parse_task(body), url
            if decision.kind == "none":
                raise TaskRefusedError("none", f"{dp} has no task for this machine: nothing to do"
                                       + (f" ({decision.detail})" if decision.detail else ""))
            if decision.kind == "refused":
                raise TaskRefusedError(decision.decision, f"{dp}: this machine's deployment is {decision.decision}"
                                       + (f" ({decision.detail})" if decision.detail else ""))
            if decision.kind != "wait":
                if decision.kind == "unexpected":
                    log.warning("task: %s answered %s; looking for the task files instead", url, decision.detail)
                return None
            waited = self.clock() - started
            if waited + decision.retry_after > self.wait:
                raise TaskRefusedError(decision.decision, f"{dp}: this machine's deployment is still "
                                       f"{decision.decision} after {waited:.0f} s (the agent waits up to "
                                       f"{self.wait:.0f} s); approve it on the DP and boot the machine again")
            message = (f"{dp}: the deployment is {decision.decision}"
                       + (f" ({decision.detail})" if decision.detail else "")
                       + f"; asking again in {decision.retry_after:.0f} s")
            if self.reporter is not None:
                self.reporter.emit("waiting", message)
            else:
                log.info("waiting: %s", message)
            last = decision
            self.sleep(decision.retry_after)

    def _get(self, url: str) -> tuple[int, bytes]:
        """One answer (status, body up to the task limit); FetchError when the DP cannot be reached."""
        retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(API_ATTEMPTS),
                                     wait=tenacity.wait_exponential(multiplier=0.5, max=4.0),
                                     retry=tenacity.retry_if_exception_type(TRANSIENT), sleep=self.sleep,
                                     reraise=True)
        try:
            return retrying(self._get_once, url)
        except TRANSIENT as exc:
            raise FetchError(f"{url.split('?')[0]}: {failure_text(exc)}") from None

    def _get_once(self, url: str) -> tuple[int, bytes]:
        with self.session.get(url, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)) as response:
            if response.status_code >= 500:
                raise requests.ConnectionError(f"HTTP {response.status_code}")
            body = bytearray()
            for piece in response.iter_content(64 << 10):
                body += piece
                if len(body) > TASK_LIMIT:
                    raise FetchError(f"{url.split('?')[0]}: the answer is larger than the {TASK_LIMIT} bytes "
                                     "allowed for a task")
            return response.status_code, bytes(body)


def dp_of(source: str, dps: Sequence[str]) -> str | None:
    """The DP a URL is on (the one whose base it starts with), else the first DP; None without DPs."""
    for dp in dps:
        if source.startswith(dp if dp.endswith("/") else dp + "/"):
            return dp
    return dps[0] if dps else None


def deploy(options: DeployOptions, reporter: Reporter | None = None) -> Task:
    """Run a deployment; returns the task (whose ``after`` says what to do next).

    Done or failed, the status events get up to ``options.flush_seconds`` to reach the status
    server before this returns: the caller (the PE's /init) powers off or reboots right after.
    """
    reporter = reporter or Reporter(options.status, journal_dir=options.journal_dir)
    try:
        return _deploy(options, reporter)
    except PeagentError as exc:
        reporter.emit("failed", str(exc), echo=False, error_code=exc.code)  # the CLI prints it
        raise
    except Exception as exc:  # a bug: the CLI shows the traceback; the DP should still learn of the failure
        reporter.emit("failed", f"internal error: {brief(exc)}", echo=False, error_code=PeagentError.code)
        raise
    finally:
        reporter.flush(options.flush_seconds)


def _deploy(options: DeployOptions, reporter: Reporter) -> Task:
    inventory = collect()
    reporter.machine = machine_identity(inventory)
    reporter.emit("inventory", f"{len(inventory.disks)} disk(s): "
                  + (", ".join(d.summary() for d in inventory.disks) or "none")
                  + f"; NICs {', '.join(inventory.macs()) or 'none'}")

    task, source = load_task(options.task, options.dps, inventory, reporter=reporter, wait=options.task_wait)
    status_url = task.status.url or options.status or reporter.url  # the task's wins, else the PE's
    reporter.configure(status_url, task.status.token)
    reporter.dp = dp_of(source, task.dps or options.dps)
    reporter.deployment_id = task.deployment_id  # the events so far are journaled (and posted) from here
    reporter.emit("task", f"{task.deployment_id} from {source}")

    plan = make_plan(task, inventory, options.dps)
    for line in plan.render().splitlines():
        log.info("plan: %s", line)
    for warning in plan.warnings:
        reporter.emit("plan", f"warning: {warning}")
    target = plan.target.disk
    loaded = None
    if task.drivers is not None:
        loaded = drivers_step.load(task.drivers, task.dps or options.dps, trusted_keys(given=options.keys))
        reporter.emit("drivers", f"index {task.drivers.index}: {len(loaded.index.packages)} packages, trusted by "
                      f"{loaded.trust}")
    ctx = Context(plan, reporter, tuple(inventory.macs()), status_url, options.journal_dir, options.firmware,
                  inventory, loaded, task.status.token)
    if isinstance(plan.image, FilesSource | WimSource):
        _inplace(plan, plan.image, task, options, ctx)
        reporter.emit("done", f"deployment {task.deployment_id} done on {target.path}; next: {task.after}")
        return task

    job = None
    if plan.image is not None:
        # Trust, tables, bases, checksum files and bmaps: everything that can refuse the image, before
        # the erase or the partitioning destroys anything.
        job = prepare_image(plan.image, task.dps or options.dps,
                            keys=trusted_keys(given=options.keys), caps=target.erase_caps,
                            journal_dir=options.journal_dir)
        if job.size is not None and job.size > target.size:
            raise ImageError(f"{job.label} ({job.size} bytes) is larger than the target {target.path} "
                             f"({target.size} bytes)")
        reporter.emit("image", f"{job.label}: ready, {job.size if job.size is not None else 'unknown'} bytes")
    identity = _identity(job.identity) if job is not None else None
    if skip_if_deployed(ctx, identity):
        return task
    captured = capture_old(ctx, target.partitions)

    zeroed = False
    if plan.erase is not None:
        caps = target.erase_caps
        assert caps is not None  # the plan checked
        reporter.emit("erase", f"{target.path}: {plan.erase.mode}")
        parts = [(p.start, p.size) for p in target.partitions]
        progress = Progress(progress_total(plan.erase, target.size, parts),
                            lambda snap: reporter.progress("erase", snap))
        report = erase(target.path, plan.erase, caps, progress.add)
        progress.finish()
        reporter.emit("erase", report.summary())
        zeroed = expected_data(report.mode, report.method, caps).data == "zero"

    if plan.layout is not None:
        reporter.emit("partition", f"{target.path}: {len(plan.layout.created)} new, "
                      f"{len(plan.layout.kept)} kept, {len(plan.layout.deleted)} deleted")
        apply_layout(plan.layout, target.path)
        make_filesystems(plan.layout, target.path)

    if job is not None:
        reporter.emit("write", f"{job.label} -> {target.path}")
        progress = Progress(job.size, lambda snap: reporter.progress("write", snap))
        lines = job.write(target.path, target_zeroed=zeroed, progress=progress.add,
                          on_retry=lambda m: reporter.emit("retry", m))
        progress.finish()
        for line in lines:
            reporter.emit("verify", line)
        finish(ctx, target, identity or ImageIdentity(job.label, None, None), captured, task.after)
    reporter.emit("done", f"deployment {task.deployment_id} done on {target.path}; next: {task.after}")
    return task


def _identity(parts: tuple[str, str | None, str | None]) -> ImageIdentity | None:
    name, version, digest = parts
    return ImageIdentity(name, version, digest) if digest is not None else None


def _inplace(plan: Plan, image: FilesSource | WimSource, task: Task, options: DeployOptions, ctx: Context) -> None:
    """Re-image the OS partition in place: images checked and the OS found before anything is deleted."""
    assert plan.inplace is not None
    reporter = ctx.reporter
    dps = task.dps or options.dps
    mount_parent = ctx.mount_parent
    if isinstance(image, WimSource):
        staged = _stage_wims(image, dps, options, reporter)
        content = wim.check_complete(wim.info(staged[0]), image.index, [wim.info(p) for p in staged[1:]])
        identity = ImageIdentity(f"{Path(urlsplit(image.wim.url).path).name} image {image.index}", None,
                                 f"sha256:{image.wim.sha256}#{image.index}")
        if skip_if_deployed(ctx, identity):
            return
        chosen = choose(survey(plan.candidates, mount_parent), plan.inplace, plan.target.disk.path,
                        task.deployment_id)
        reporter.emit("inplace", chosen.describe())
        if chosen.partition.fstype != "ntfs":
            raise InplaceError(f"{chosen.describe()}: a WIM (Windows) image goes onto an NTFS partition; nothing "
                               "was changed")
        captured = capture_old(ctx, _capturable(chosen))
        meter = Progress(None, lambda snap: reporter.progress("apply", snap))
        reimage_windows(chosen, plan.inplace, staged[0], content, staged[1:], task.deployment_id,
                        mount_parent=mount_parent, emit=reporter.emit, progress=wim.feed(meter))
        meter.finish()
        finish(ctx, plan.target.disk, identity, captured, task.after, partitions=plan.target.disk.partitions,
               os_partitions=[chosen.partition])
        return
    stack = load_stack([s.manifest for s in image.all], dps, trusted_keys(given=options.keys),
                       [s.pin for s in image.all], need_base=True)
    total = sum(i.manifest.size for i in stack)
    reporter.emit("image", f"{' + '.join(i.label for i in stack)}: ready, {total} bytes of file images")
    digest = hashlib.sha256(",".join(i.manifest_sha256 for i in stack).encode()).hexdigest()
    identity = ImageIdentity(" + ".join(i.manifest.name for i in stack), " + ".join(i.manifest.version for i in stack),
                             f"sha256:{digest}")
    if skip_if_deployed(ctx, identity):
        return
    chosen = choose(survey(plan.candidates, mount_parent), plan.inplace, plan.target.disk.path,
                    task.deployment_id)
    reporter.emit("inplace", chosen.describe())
    captured = capture_old(ctx, _capturable(chosen))
    progress = Progress(total, lambda snap: reporter.progress("apply", snap))
    report = reimage(chosen, plan.inplace, stack, task.deployment_id, mount_parent=mount_parent,
                     allow_devices=image.allow_devices, emit=reporter.emit, progress=progress.add)
    progress.finish()
    for applied in report.applied:
        r = applied.report
        reporter.emit("verify", f"{applied.label}: {r.files} files, {r.dirs} directories, {r.symlinks} symlinks, "
                      f"{r.bytes} bytes applied ({r.kept} left to kept data), {applied.fetched} bytes fetched, "
                      "every frame verified")
    finish(ctx, plan.target.disk, identity, captured, task.after, partitions=plan.target.disk.partitions,
           os_partitions=[chosen.partition])


def _capturable(chosen: Surveyed) -> list[Partition]:
    """The partition to capture from: none when an interrupted re-image already deleted part of the old OS
    (its capture, saved by that run, is used instead: peagent.newos.capture_old)."""
    return [] if chosen.os is None or chosen.os.resuming else [chosen.partition]


def _stage_wims(image: WimSource, dps: tuple[str, ...], options: DeployOptions, reporter: Reporter) -> list[Path]:
    """The WIM and its refs fetched into the PE (resumable, every byte checked against its sha256)."""
    where = (options.journal_dir or Path(tempfile.gettempdir())) / "wim"
    where.mkdir(parents=True, exist_ok=True)
    staged = []
    for item in image.all:
        path = where / f"{item.sha256[:16]}-{Path(urlsplit(item.url).path).name}"
        if not path.exists() or path.stat().st_size == 0 or file_sha256(path) != item.sha256:
            job = prepare_image(StreamSource(url=item.url, sha256=item.sha256, size=None, compression="none",
                                             checksum_url=None, bmap=None), dps)
            reporter.emit("image", f"{item.url} -> {path}")
            meter = Progress(job.size, lambda snap: reporter.progress("fetch", snap))
            try:
                for line in job.write(str(path), target_zeroed=False, progress=meter.add,
                                      on_retry=lambda m: reporter.emit("retry", m)):
                    reporter.emit("verify", line)
            except BaseException:
                path.unlink(missing_ok=True)  # never a half or wrong WIM left for a rerun to trust
                raise
            meter.finish()
        staged.append(path)
    return staged
