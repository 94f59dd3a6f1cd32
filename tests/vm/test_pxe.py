"""Network boot of the PE the way machines do it: the firmware's iPXE gets the first-stage
script by TFTP, which chains the DP's boot.ipxe over HTTP, which boots the PE from the DP."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.dp import DPProcess
from tests.vm.conftest import ROOT
from tests.vm.pe import exit_status, run_param
from tests.vm.qemu import Machine


def pxe_setup(pe: Path, workdir: Path, extra: str) -> tuple[Path, Path]:
    """A TFTP root (first stage + site settings) and a DP serving boot.ipxe and the PE."""
    tftp = workdir / "tftp"
    tftp.mkdir()
    shutil.copy(ROOT / "netboot/ipxe/peagent.ipxe", tftp)
    (tftp / "peagent-site.ipxe").write_text(
        f"#!ipxe\nset peagent-dp http://10.0.2.2:8080\nset peagent-extra {extra}\n")
    dp = workdir / "dp"
    (dp / "pe").mkdir(parents=True)
    shutil.copy(ROOT / "netboot/ipxe/boot.ipxe", dp)
    for name in ("vmlinuz", "initrd.zst"):
        (dp / "pe" / name).symlink_to(pe / name)
    return tftp, dp


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_pxe_boot_through_ipxe_runs_the_agent(firmware, pe, workdir, netns, start_vm) -> None:
    tftp, dp = pxe_setup(pe, workdir, run_param("peagent --version; echo pxe-ok"))
    with DPProcess(dp, netns.prefix()):
        vm = start_vm(Machine(firmware=firmware, pxe=True, tftp_dir=tftp, bootfile="peagent.ipxe"))
        vm.expect(r"init: peagent PE .* firmware " + firmware.upper(), 180)
        vm.expect(r"run: running the peagent.run command", 60)
        agent_running = vm.last_match_time
        vm.expect(r"peagent \d+\.\d+\.\d+\s+pxe-ok", 60)
        assert exit_status(vm) == 0
    print(f"\nfigure: PXE {firmware} boot, agent running at {agent_running:.1f} s")
