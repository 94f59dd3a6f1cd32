"""`make demo`'s scenario, asserted: PXE (UEFI) -> deploy the demo OS -> reboot -> the new OS is up."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.vm.conftest import BUILD, ROOT
from tests.vm.demo import run_demo


def test_demo_deploys_and_boots_the_new_os(pe: Path, workdir: Path, netns) -> None:
    demo = BUILD / "demo"
    subprocess.run([str(ROOT / "demo/os/build.sh"), str(demo)], check=True)  # a cache hit after `make`
    result = run_demo(workdir / "demo", pe, demo, netns.prefix())
    assert "hostname=demo-os" in result.up_line and "firmware=uefi" in result.up_line
    phases = [e["phase"] for e in result.events if e["phase"] != "write" or e["message"] != "progress"]
    assert phases == ["inventory", "task", "image", "write", "verify", "verify", "done"]
    print(f"\nfigure: demo PXE+deploy {result.deploy_seconds:.0f} s, new OS up after {result.first_boot_seconds:.0f} s")
