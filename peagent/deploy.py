"""A deployment from start to finish: who am I, what is my task, where does it go, write, verify.

The order is the safety argument. Everything that can refuse (fetching and validating the task,
checking that it is meant for this machine, choosing the target, laying out its partitions,
checking that the image fits and what data would be destroyed) happens before the first byte is
written; then the partitions are made and the image is streamed and verified; only a verified
image is reported as deployed. What happens after (reboot, power off) is returned to
the caller, which in the PE is /init: power is PID 1's business.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from peagent.disk.erase import erase, expected_data, progress_total
from peagent.disk.filesystem import make_filesystems
from peagent.disk.partition import apply_layout
from peagent.errors import ImageError, PeagentError, TaskError
from peagent.fetch import NotFoundError, candidate_urls, fetch_bytes
from peagent.image.job import prepare_image
from peagent.image.sign import trusted_keys
from peagent.inventory import Inventory, collect
from peagent.plan import make_plan
from peagent.progress import Progress
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
    target = plan.target.disk

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
    reporter.emit("done", f"deployment {task.deployment_id} done on {target.path}; next: {task.after}")
    return task
