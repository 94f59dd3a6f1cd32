"""Fixtures of the VM tests: the PE (built, or taken from the cache), a private network
namespace per test, a work directory kept with its console logs when the test fails, and a
factory of VMs that are always ended."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.netns import Netns
from tests.vm.qemu import VM, Machine

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
PREVIOUS_EXIT = 20  # s: how long a powered-off VM may take to exit before the next one starts

pytestmark = pytest.mark.vm


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def pe() -> Path:
    """The PE built from this working tree (a cache hit when nothing changed)."""
    if os.geteuid() != 0:
        pytest.skip("VM tests need root (network namespaces, the PE build)")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is missing: run scripts/install-deps")
    out = BUILD / "pe"
    subprocess.run([str(ROOT / "buildroot" / "build-pe.sh"), str(out)], check=True)
    return out


@pytest.fixture
def workdir(request: pytest.FixtureRequest) -> Iterator[Path]:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])
    path = BUILD / "test-vm" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    yield path
    report = getattr(request.node, "report_call", None)
    if report is not None and report.passed:
        shutil.rmtree(path, ignore_errors=True)
    else:
        print(f"\nVM work directory with console logs kept: {path}")


@pytest.fixture
def netns() -> Iterator[Netns]:
    with Netns() as ns:
        yield ns


@pytest.fixture
def start_vm(workdir: Path, netns: Netns) -> Iterator[Callable[..., VM]]:
    """start_vm(machine, name="vm") -> a started VM in the test's namespace; ended at teardown."""
    started: list[VM] = []

    def start(machine: Machine, name: str = "vm") -> VM:
        # A test starts the next VM once the last one said "power: off"; QEMU still holds its disks' locks
        # until it has exited (the PE lets the console drain first): give it the moment it needs.
        for previous in started:
            if previous.proc is not None and previous.proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    previous.proc.wait(PREVIOUS_EXIT)
        vm = VM(machine, workdir, netns.prefix(), name=name)
        started.append(vm)
        vm.start()
        return vm

    yield start
    for vm in started:
        vm.close()
