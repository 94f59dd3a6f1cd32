"""Benchmark: how long `peagent inventory` takes inside the PE (TCG), with disks on every bus.

Boots the built PE with virtio, NVMe, SATA and USB disks and runs, in the PE, the agent's
``collect()`` three times, timing the imports and each call (the first includes the erase
capability probes' first runs of nvme-cli and hdparm), and the whole ``peagent inventory --json``
command. Writes bench/results/inventory_time.json.

    .venv/bin/python -m bench.inventory_time
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from tests.support.netns import Netns
from tests.vm.pe import blank_disk, direct, json_between, run_param
from tests.vm.qemu import VM, Drive

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = r"""
import json, time
t0 = time.perf_counter()
from peagent.inventory import collect
t1 = time.perf_counter()
runs = []
for _ in range(3):
    a = time.perf_counter(); inv = collect(); runs.append(time.perf_counter() - a)
print("timing-begin"); print(json.dumps({"import": t1 - t0, "collect": runs, "disks": len(inv.disks),
      "pci": len(inv.pci), "usb": len(inv.usb)})); print("timing-end")
"""


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-inventory-"))
    try:
        drives = [Drive(blank_disk(work / "v.img", 1 << 30), "virtio", serial="V1"),
                  Drive(blank_disk(work / "n.img", 1 << 30), "nvme", serial="N1"),
                  Drive(blank_disk(work / "s.img", 1 << 30), "sata", serial="S1"),
                  Drive(blank_disk(work / "u.img", 1 << 30), "usb", serial="U1")]
        command = ("cat > /tmp/t.py <<'EOF'\n" + SNIPPET + "\nEOF\npython3 /tmp/t.py; "
                   "s=$(date +%s.%N); peagent inventory --json > /dev/null; e=$(date +%s.%N); "
                   "echo cli-begin; awk -v a=$e -v b=$s 'BEGIN { print \"{\\\"cli\\\": \" a - b \"}\" }'; "
                   "echo cli-end")
        with Netns("bench") as ns, VM(direct(ROOT / "build/pe", run_param(command), drives), work, ns.prefix()) as vm:
            timing = json_between(vm, "timing", 300)
            cli = json_between(vm, "cli", 120)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"when": time.strftime("%Y-%m-%d %H:%M"), "accel": "tcg", **timing, **cli}
    (ROOT / "bench/results/inventory_time.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"inventory in the PE (TCG, {timing['disks']} disks): import {timing['import']:.2f} s, "
          f"collect {', '.join(f'{t:.2f}' for t in timing['collect'])} s; "
          f"`peagent inventory --json` {cli['cli']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
