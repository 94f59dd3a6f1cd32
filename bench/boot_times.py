"""Benchmark: seconds from QEMU start to the agent running, for every way the PE boots.

Each route boots the built PE (build/pe) under TCG and waits for the first line the Python
agent itself prints (``peagent --version`` run through peagent.run; for the read-only ISO,
which carries no parameters, the agent's first deploy line). Also recorded: when /init printed
its first line. Runs each route ``--runs`` times and writes bench/results/boot_times.json and a
Markdown table.

    .venv/bin/python -m bench.boot_times [--runs 3] [--routes direct-bios,pxe-uefi,...]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tests.support.dp import DPProcess
from tests.support.netns import Netns
from tests.vm.pe import direct, run_param, usb_stick_with_params
from tests.vm.qemu import VM, Drive, Machine
from tests.vm.test_pxe import pxe_setup

ROOT = Path(__file__).resolve().parents[1]
PE = ROOT / "build" / "pe"
ROUTES = ["direct-bios", "direct-uefi", "pxe-bios", "pxe-uefi", "usb-bios", "usb-uefi", "iso-bios", "iso-uefi"]
AGENT_LINE = r"^peagent \d+\.\d+\.\d+"


def boot_once(route: str, work: Path) -> dict[str, float]:
    kind, firmware = route.split("-")
    agent_pattern = AGENT_LINE
    with Netns("bench") as ns:
        dp_ctx = None
        if kind == "direct":
            machine = direct(PE, run_param("peagent --version"), firmware=firmware)
        elif kind == "pxe":
            tftp, dp = pxe_setup(PE, work, run_param("peagent --version"))
            dp_ctx = DPProcess(dp, ns.prefix()).__enter__()
            machine = Machine(firmware=firmware, pxe=True, tftp_dir=tftp, bootfile="peagent.ipxe")
        elif kind == "usb":
            stick = usb_stick_with_params(PE, work, run_param("peagent --version"))
            machine = Machine(firmware=firmware, drives=[Drive(stick, "usb", bootindex=0)])
        else:
            iso = Drive(PE / "peagent.iso", "usb", bootindex=0, readonly=True)
            machine = Machine(firmware=firmware, drives=[iso])
            agent_pattern = r"^peagent: inventory: "
        try:
            with VM(machine, work, ns.prefix(), name=route) as vm:
                vm.expect(r"init: peagent PE", 300)
                init = vm.last_match_time
                vm.expect(agent_pattern, 300)
                return {"init": round(init, 1), "agent": round(vm.last_match_time, 1)}
        finally:
            if dp_ctx:
                dp_ctx.__exit__(None, None, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--routes", default=",".join(ROUTES))
    args = parser.parse_args()
    build_info = json.loads((PE / "build-info.json").read_text())
    results: dict[str, dict] = {}
    for route in args.routes.split(","):
        samples = []
        for _ in range(args.runs):
            work = Path(tempfile.mkdtemp(prefix=f"bench-{route}-"))
            try:
                samples.append(boot_once(route, work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(f"{route}: {samples[-1]}", flush=True)
        agent = [s["agent"] for s in samples]
        results[route] = {"samples": samples, "agent_median": statistics.median(agent),
                          "agent_min": min(agent), "agent_max": max(agent)}
    out = {"when": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "accel": "tcg",
           "pe_build": build_info["build_key"], "initrd_bytes": build_info["sizes"]["initrd.zst"],
           "routes": results}
    path = ROOT / "bench" / "results" / "boot_times.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("\n| route | agent running, s (median, min-max) | /init, s (median) |\n|---|---|---|")
    for route, r in results.items():
        init = statistics.median(s["init"] for s in r["samples"])
        print(f"| {route} | {r['agent_median']:.1f} ({r['agent_min']:.1f}-{r['agent_max']:.1f}) | {init:.1f} |")
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
