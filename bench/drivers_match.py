"""Benchmark: matching a machine against the index of a 2,000-package driver store, on the host and in the PE.

The store is bench/drivers_index.py's (build/bench-drivers, made there if missing), indexed once.
Two figures, each split into loading the index (``StoreIndex.from_json`` of the 22 MB index.json)
and the match itself (``peagent.drivers.match.match`` of the machine's devices, Windows 10 amd64,
a Dell Latitude make/model so that the group rule is exercised):

* host: the captured QEMU inventory (tests/unit/fixtures), median of 5;
* PE: the PE booted in QEMU (TCG, direct kernel) fetches index.json from the embedded DP on
  loopback and matches its own inventory, three times in one boot; median of 3. This is the goal's
  figure (match under 1 s in the PE).

    .venv/bin/python -m bench.drivers_match [--no-pe]

Results: bench/results/drivers_match.json and lines on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.drivers_index import WORK, make_store
from peagent.drivers.hwids import devices
from peagent.drivers.match import Target, match
from peagent.drivers.store import StoreIndex, index_store, write_index
from peagent.inventory import Dmi, from_dict

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "drivers_match.json"
INVENTORY = ROOT / "tests/unit/fixtures/inventory-qemu-uefi-usb-boot.json"
DELL = {"sys_vendor": "Dell Inc.", "product_name": "Latitude 5440"}
PE_SCRIPT = r"""
import json, time, requests
from peagent.inventory import collect
from peagent.inventory.model import Dmi
from dataclasses import replace
from peagent.drivers.hwids import devices
from peagent.drivers.match import Target, match
from peagent.drivers.store import StoreIndex
data = requests.get("%(url)s", timeout=60).content
inv = collect()
out = []
for _ in range(3):
    t0 = time.monotonic(); index = StoreIndex.from_json(data); t1 = time.monotonic()
    result = match(devices(inv), index, Target("windows", "amd64", "Dell Inc.", "Latitude 5440", (10, 0, 19045), "win10"))
    t2 = time.monotonic()
    out.append({"load_s": round(t1 - t0, 3), "match_s": round(t2 - t1, 3), "devices": len(devices(inv)),
                "matched": len(result.choices)})
print("bench-result: " + json.dumps(out))
"""


def ensure_index() -> Path:
    store = WORK / "store"
    if not (store / "index.json").exists():
        if not store.exists():
            make_store(store, 2000)
        write_index(index_store(store), store, None)
    return store


def host(store: Path, runs: int) -> dict:
    data = (store / "index.json").read_bytes()
    inventory = from_dict(json.loads(INVENTORY.read_text()))
    inventory = type(inventory)(**{**inventory.__dict__, "dmi": Dmi(**DELL)})
    target = Target("windows", "amd64", DELL["sys_vendor"], DELL["product_name"], (10, 0, 19045), "win10")
    loads, matches = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        index = StoreIndex.from_json(data)
        t1 = time.monotonic()
        result = match(devices(inventory), index, target)
        matches.append(time.monotonic() - t1)
        loads.append(t1 - t0)
    return {"index_bytes": len(data), "packages": len(index.packages), "devices": len(devices(inventory)),
            "matched": len(result.choices), "load_s": round(statistics.median(loads), 3),
            "match_s": round(statistics.median(matches), 4)}


def in_pe(store: Path) -> dict:
    from tests.support.dp import DPProcess
    from tests.support.netns import Netns
    from tests.vm.pe import direct, run_param
    from tests.vm.qemu import VM

    work = ROOT / "build" / "bench-drivers-pe"
    work.mkdir(parents=True, exist_ok=True)
    with Netns("bench") as ns, DPProcess(store, ns.prefix()) as dp:
        script = PE_SCRIPT % {"url": f"{dp.guest_url}index.json"}
        command = f"python3 - <<'EOF'\n{script}\nEOF\n"
        with VM(direct(ROOT / "build/pe", run_param(command), memory_mib=2048), work, ns.prefix(),
                name="match") as vm:
            line = vm.expect(r"bench-result: ([^\n]*)\n", 900).group(1)
    samples = json.loads(line)
    return {"samples": samples, "load_s": statistics.median(s["load_s"] for s in samples),
            "match_s": statistics.median(s["match_s"] for s in samples), "devices": samples[0]["devices"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-pe", action="store_true", help="the host figure only")
    args = parser.parse_args()
    store = ensure_index()
    results = {"when": time.strftime("%Y-%m-%d %H:%M"), "host": host(store, args.runs)}
    print(f"host: load {results['host']['load_s']} s, match {results['host']['match_s']} s "
          f"({results['host']['devices']} devices, {results['host']['packages']} packages)")
    if not args.no_pe:
        results["pe"] = in_pe(store)
        print(f"PE (TCG): load {results['pe']['load_s']} s, match {results['pe']['match_s']} s "
              f"({results['pe']['devices']} devices)")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
