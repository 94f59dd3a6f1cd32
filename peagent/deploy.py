"""A deployment from start to finish: who am I, what is my task, where does it go, write, verify.

The order is the safety argument. Everything that can refuse (fetching and validating the task,
checking that it is meant for this machine, choosing the target, laying out its partitions,
checking that the image fits and what data would be destroyed) happens before the first byte is
written; then the partitions are made and the image is streamed and verified; only a verified
image is reported as deployed. An in-place re-image (peagent.inplace) follows the same order:
the file images are loaded and checked and the OS partition is found (looking into the
partitions read-only) before its old OS is deleted. What happens after (reboot, power off) is returned to
the caller, which in the PE is /init: power is PID 1's business.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from peagent.disk.erase import erase, expected_data, progress_total
from peagent.disk.filesystem import make_filesystems
from peagent.disk.partition import apply_layout
from peagent.drivers import step as drivers_step
from peagent.errors import ImageError, InplaceError, PeagentError, TaskError
from peagent.fetch import NotFoundError, candidate_urls, fetch_bytes
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
from peagent.task import Task, parse_task

log = logging.getLogger("peagent")
TASK_LIMIT = 1 << 20  # bytes; a task is a small document


@dataclass(frozen=True)
class DeployOptions:
    task: str | None  # URL or path of the task; None: look it up on the DPs
    dps: tuple[str, ...] = ()
    status: str | None = None
    keys: tuple[str, ...] = ()  # public keys given at boot (peagent.key=), trusted besides /etc/peagent/keys
    journal_dir: Path | None = None  # where the image writer keeps its journal (the PE: /run/peagent)
    # Set the firmware's boot entries (and load kexec): only in the PE, where the firmware is the
    # deployed machine's. Off elsewhere, so that writing a stick from a workstation never edits the
    # workstation's own boot order.
    firmware: bool = False


def task_lookup_refs(inventory: Inventory) -> list[str]:
    """Where a machine's task is looked for on the DPs when none is named: by MAC, then default."""
    return [f"tasks/{mac.replace(':', '-')}.json" for mac in inventory.macs()] + ["tasks/default.json"]


def load_task(ref: str | None, dps: tuple[str, ...], inventory: Inventory) -> tuple[Task, str]:
    """Fetch and validate the task; returns it and where it came from."""
    if ref is not None and "://" not in ref and Path(ref).exists():
        return parse_task(Path(ref).read_bytes()), ref
    refs = [ref] if ref is not None else task_lookup_refs(inventory)
    if ref is None and not dps:
        raise TaskError("peagent.task", "a task URL, or DPs (peagent.dp) to look the task up on",
                        "neither")
    for candidate in refs:
        urls = candidate_urls(candidate, dps)
        try:
            data = fetch_bytes(urls, TASK_LIMIT)
        except NotFoundError:
            if ref is not None:
                raise
            continue
        return parse_task(data), urls[0]
    raise NotFoundError(f"no task for this machine on the DPs (looked for {', '.join(refs)})")


def deploy(options: DeployOptions, reporter: Reporter | None = None) -> Task:
    """Run a deployment; returns the task (whose ``after`` says what to do next)."""
    reporter = reporter or Reporter(options.status)
    try:
        return _deploy(options, reporter)
    except PeagentError as exc:
        reporter.emit("failed", str(exc), echo=False, error_code=exc.code)  # the CLI prints it
        raise


def _deploy(options: DeployOptions, reporter: Reporter) -> Task:
    inventory = collect()
    reporter.machine = {"macs": inventory.macs(), "uuid": inventory.dmi.product_uuid,
                        "serial": inventory.dmi.product_serial}
    reporter.emit("inventory", f"{len(inventory.disks)} disk(s): "
                  + (", ".join(d.summary() for d in inventory.disks) or "none")
                  + f"; NICs {', '.join(inventory.macs()) or 'none'}")

    task, source = load_task(options.task, options.dps, inventory)
    reporter.deployment_id = task.deployment_id
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
    ctx = Context(plan, reporter, tuple(inventory.macs()), options.status, options.journal_dir, options.firmware,
                  inventory, loaded)
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
