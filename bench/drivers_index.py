"""Benchmark: ``index_store`` over a synthetic driver store of 2,000 Windows INF packages.

The store (build/bench-drivers, made once, seeded) follows the folder convention of docs/drivers.md:
packages spread over 5 makes, 40 models and a ``_generic`` group, under win10/win11 and amd64/arm64.
Each package is shaped like a vendor's: one INF (a few packages hold two), a .sys of 16-256 KiB and a
.cat. Each INF has a [Version] (8 setup classes, CatalogFile plain or decorated, DriverVer), one or
two [Manufacturer] lines with 1-4 TargetOSVersion decorations, a Models section per decoration
repeating 2-30 devices (PCI with SUBSYS and REV, USB, HDAUDIO, ACPI), several ids per line,
install sections with CopyFiles/AddReg/FeatureScore, [SourceDisksFiles], [Strings] and for a quarter
of them [Strings.0407]; comments, quoting and line continuations. A third of the INFs are UTF-16LE
with a BOM (as Intel's and Realtek's are), CRLF line ends throughout. About 1% are malformed: a text
file named .inf, or an INF with broken Models lines and a bad DriverVer; they must come out as
warnings.

A run is the whole ``index_store`` (walk, read, sha256 of every file, parse every INF), page cache
warm (the store was just written or read); then making the JSON, and reading it back (what the PE
does before matching: ``StoreIndex.from_json``), each timed apart. Median of 3.

    .venv/bin/python -m bench.drivers_index [--runs 3] [--packages 2000] [--rebuild]

Results: bench/results/drivers_index.json and a line on stdout.
"""

from __future__ import annotations

import argparse
import codecs
import json
import platform
import random
import shutil
import statistics
import time
from pathlib import Path

from peagent.drivers.store import StoreIndex, index_store

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "bench-drivers"
RESULTS = ROOT / "bench" / "results" / "drivers_index.json"
MAKES = {"Dell Inc.": "Latitude 54{}0", "LENOVO": "ThinkPad T4{}0s", "HP": "HP EliteBook 8{}0 G9",
         "Microsoft Corporation": "Surface Pro {}", "ASUSTeK COMPUTER INC.": "ExpertBook B{}402CVA"}
CLASSES = [("Net", "{4d36e972-e325-11ce-bfc1-08002be10318}"), ("SCSIAdapter", "{4d36e97b-e325-11ce-bfc1-08002be10318}"),
           ("Display", "{4d36e968-e325-11ce-bfc1-08002be10318}"), ("MEDIA", "{4d36e96c-e325-11ce-bfc1-08002be10318}"),
           ("HIDClass", "{745a17a0-74d3-11d0-b6fe-00a0c90f57da}"), ("System", "{4d36e97d-e325-11ce-bfc1-08002be10318}"),
           ("USB", "{36fc9e60-c465-11cf-8056-444553540000}"), ("Bluetooth", "{e0cbf06c-cd8b-4647-bb8a-263b43f0f974}")]
DECORATIONS = ["NTamd64", "NTamd64.10.0...16299", "NTamd64.10.0...22000", "NTamd64.6.3", "NTarm64",
               "NTarm64.10.0...22000", "NTx86"]


def device_ids(rng: random.Random) -> list[str]:
    """One device's ids as a Models line lists them: the most specific first."""
    vendor, device = rng.choice(["8086", "10EC", "14E4", "1022", "1AF4", "10DE"]), f"{rng.randrange(0x10000):04X}"
    kind = rng.random()
    if kind < 0.6:
        sub, rev = f"{rng.randrange(0x10000):04X}{rng.choice(['1028', '17AA', '103C', '1043'])}", rng.randrange(16)
        base = f"PCI\\VEN_{vendor}&DEV_{device}"
        return rng.choice([[f"{base}&SUBSYS_{sub}&REV_{rev:02X}"], [f"{base}&SUBSYS_{sub}", base], [base],
                           [f"{base}&REV_{rev:02X}", f"{base}&CC_0200"]])
    if kind < 0.8:
        return [f"USB\\VID_{vendor}&PID_{device}&MI_0{rng.randrange(4)}", f"USB\\VID_{vendor}&PID_{device}"]
    if kind < 0.95:
        return [f"HDAUDIO\\FUNC_01&VEN_{vendor}&DEV_{device}&SUBSYS_{rng.randrange(1 << 32):08X}"]
    return [f"ACPI\\VEN_INT&DEV_{device}", f"*INT{device}"]


def make_inf(rng: random.Random, name: str) -> str:
    driver_class, guid = rng.choice(CLASSES)
    decorations = rng.sample(DECORATIONS, rng.randint(1, 4))
    devices = [(f"DEV{i}.DeviceDesc", f"{name}_Inst{i % 3}", device_ids(rng)) for i in range(rng.randint(2, 30))]
    catalog = (f"CatalogFile.NTamd64 = {name}x64.cat" if rng.random() < 0.5 else f"CatalogFile = {name}.cat")
    lines = [f"; {name}.inf -- Copyright (c) Vendor Corporation. All rights reserved.", ";", "[Version]",
             'Signature   = "$WINDOWS NT$"', f"Class       = {driver_class}", f"ClassGuid   = {guid}",
             "Provider    = %ProviderName%", catalog,
             f"DriverVer   = {rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(2015, 2024)},"
             f"{rng.randint(1, 31)}.{rng.randint(0, 99)}.{rng.randint(0, 9999)}.{rng.randint(0, 9999)}",
             "PnpLockdown = 1", "", "[Manufacturer]", f"%MfgName% = {name}Models, {', '.join(decorations)}"]
    if rng.random() < 0.3:
        lines.append(f"%MfgName2% = {name}Extra, {decorations[0]}")
        lines += ["", f"[{name}Extra.{decorations[0]}]", f"%DEV0.DeviceDesc% = {name}_Inst0, {devices[0][2][-1]}"]
    for decoration in decorations:
        lines += ["", f"[{name}Models.{decoration}]", "; DisplayName = Section, DeviceID"]
        for key, install, ids in devices:
            if len(ids) > 1 and rng.random() < 0.2:
                lines += [f"%{key}% = {install}, {ids[0]}, \\", f"    {', '.join(ids[1:])}"]
            else:
                lines.append(f"%{key}% = {install}, {', '.join(ids)}")
    for i in range(3):
        lines += ["", f"[{name}_Inst{i}.NT]", f"CopyFiles = {name}.CopyFiles", f"AddReg = {name}.AddReg",
                  f"FeatureScore = 0x{rng.randrange(0x80, 0x100):02X}", f"Characteristics = 0x{rng.choice([4, 0x84])}",
                  "", f"[{name}_Inst{i}.NT.Services]", f"AddService = {name}, 2, {name}.Service"]
    lines += ["", f"[{name}.CopyFiles]", f"{name}.sys,,,0x100", "", f"[{name}.AddReg]",
              'HKR, Ndi\\params\\*SpeedDuplex, ParamDesc, 0, "%SpeedDuplex%"', "", "[SourceDisksNames]",
              '1 = %DiskName%,,,""', "", "[SourceDisksFiles]", f"{name}.sys = 1,,", "", "[DestinationDirs]",
              "DefaultDestDir = 13", "", "[Strings]", 'ProviderName = "Vendor Corporation"',
              'MfgName = "Vendor"', 'MfgName2 = "Vendor OEM"', 'DiskName = "Driver Disk"', 'SpeedDuplex = "Speed"']
    lines += [f'{key} = "Vendor Device {i} ({driver_class})"' for i, (key, _, _) in enumerate(devices)]
    if rng.random() < 0.25:
        lines += ["", "[Strings.0407]"] + [f'{key} = "Vendor Gerät {i}"' for i, (key, _, _) in enumerate(devices)]
    return "\r\n".join(lines) + "\r\n"


def malformed(rng: random.Random, name: str) -> str:
    if rng.random() < 0.5:
        return "Installation notes\r\nRun setup.exe as administrator.\r\n"
    text = make_inf(rng, name).replace("DriverVer   = ", "DriverVer   = 13/45/20x9,")
    return text.replace("; DisplayName = Section, DeviceID", "%Broken% =\r\n%DEV0.DeviceDesc% = , PCI\\VEN_8086", 1)


def make_store(root: Path, packages: int, seed: int = 7) -> int:
    """Write the store; returns how many INFs are malformed."""
    rng = random.Random(seed)
    shutil.rmtree(root, ignore_errors=True)
    models = [(make, pattern.format(n)) for make, pattern in MAKES.items() for n in range(8)]
    bad = 0
    for number in range(packages):
        make, model = ("_generic", "_generic") if rng.random() < 0.2 else rng.choice(models)
        if rng.random() < 0.2:
            model = "_generic"
        directory = root / "windows" / make / model / rng.choice(["win10", "win11", "_generic"]) / rng.choice(
            ["amd64", "amd64", "amd64", "arm64"]) / f"pkg{number:04d}"
        directory.mkdir(parents=True)
        for part in range(2 if rng.random() < 0.05 else 1):
            name = f"drv{number:04d}{'abc'[part]}"
            if rng.random() < 0.01:
                text, bad = malformed(rng, name), bad + 1
            else:
                text = make_inf(rng, name)
            data = codecs.BOM_UTF16_LE + text.encode("utf-16-le") if rng.random() < 1 / 3 else text.encode()
            (directory / f"{name}.inf").write_bytes(data)
            (directory / f"{name}.sys").write_bytes(rng.randbytes(rng.randint(16, 256) << 10))
            (directory / f"{name}.cat").write_bytes(rng.randbytes(rng.randint(4, 24) << 10))
    # beside the store, not in it: it is no package
    (root.parent / "generated.json").write_text(json.dumps({"packages": packages, "seed": seed, "malformed": bad}))
    return bad


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--packages", type=int, default=2000)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    store = WORK / "store"
    marker = WORK / "generated.json"
    if args.rebuild or not marker.exists() or json.loads(marker.read_text())["packages"] != args.packages:
        make_store(store, args.packages)
    generated = json.loads(marker.read_text())
    samples, json_times, load_times = [], [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        index = index_store(store)
        samples.append(time.perf_counter() - started)
        started = time.perf_counter()
        text = index.to_json()
        json_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        StoreIndex.from_json(text.encode())
        load_times.append(time.perf_counter() - started)
    files = sum(len(p.files) for p in index.packages)
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "python": platform.python_version(),
        "store": {"packages": generated["packages"], "malformed_infs": generated["malformed"],
                  "bytes": sum(f.size for p in index.packages for f in p.files), "files": files},
        "indexed": {"packages": len(index.packages), "infs": index.inf_count,
                    "model_entries": sum(len(i.models) for p in index.packages for i in p.infs),
                    "warnings": len(index.warnings), "index_bytes": len(text.encode())},
        "index_store_s": {"samples": [round(s, 3) for s in samples], "median": round(statistics.median(samples), 3)},
        "to_json_s": {"samples": [round(s, 3) for s in json_times], "median": round(statistics.median(json_times), 3)},
        "from_json_s": {"samples": [round(s, 3) for s in load_times], "median": round(statistics.median(load_times), 3)},
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"index_store over {generated['packages']} INF packages ({result['indexed']['infs']} INFs, "
          f"{result['indexed']['model_entries']} model entries, {files} files, "
          f"{result['store']['bytes'] / (1 << 20):.0f} MiB): median {result['index_store_s']['median']:.2f} s "
          f"({', '.join(f'{s:.2f}' for s in samples)}); to_json {result['to_json_s']['median']:.2f} s, "
          f"{result['indexed']['index_bytes'] / (1 << 20):.1f} MiB, read back (from_json, what the PE does) "
          f"{result['from_json_s']['median']:.2f} s; {len(index.warnings)} warnings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
