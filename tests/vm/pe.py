"""Helpers for booting the PE in the bench and giving it work: kernel parameters, commands,
disk images, a DP directory with an image and a task."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.images import mixed_image, sha256, zstd
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


IMAGE_SIZE = 40 << 20
DISK_SIZE = 64 << 20


def make_dp(workdir: Path, overrides: dict | None = None, *, raw_task: str | None = None,
            no_task: bool = False, seed: int = 7) -> tuple[Path, bytes]:
    """A DP directory with a zstd image and tasks/default.json: a good task for the image with
    ``overrides`` applied, or ``raw_task`` as written, or none at all. Returns (root, image)."""
    root = workdir / "dp"
    (root / "images").mkdir(parents=True)
    (root / "tasks").mkdir()
    image = mixed_image(workdir / "image.raw", IMAGE_SIZE, seed)
    zstd(workdir / "image.raw", root / "images" / "test.img.zst")
    if raw_task is not None:
        (root / "tasks" / "default.json").write_text(raw_task)
    elif not no_task:
        (root / "tasks" / "default.json").write_text(json.dumps(image_task(image, **(overrides or {}))))
    return root, image


# The status token of the tests' static tasks: `peagent serve` accepts a deployment's events with the token
# its task file (in the DP's tasks/) carries; the status URL comes from the PE's peagent.status=.
STATUS = {"token": "vm-test-status-token-0001"}


def image_task(image: bytes, **overrides: object) -> dict:
    """A valid task deploying ``image`` (as make_dp serves it), with top-level fields overridden."""
    task = {
        "version": 1,
        "id": "vm-test-0001",
        "image": {"url": "images/test.img.zst", "sha256": sha256(image), "size": len(image)},
        "status": STATUS,
        "after": "poweroff",
    }
    task.update(overrides)
    return task


def usb_stick_with_params(pe: Path, workdir: Path, params: str) -> Path:
    """A copy of the PE's USB image whose /peagent.cfg carries ``params``."""
    stick = workdir / "peagent-usb.img"
    shutil.copyfile(pe / "peagent-usb.img", stick)
    cfg = workdir / "peagent.cfg"
    cfg.write_text(f"# written by the test\n{params}\n")
    subprocess.run(["mcopy", "-o", "-i", f"{stick}@@1M", str(cfg), "::/peagent.cfg"], check=True)
    return stick
