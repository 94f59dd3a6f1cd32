"""``peagent <command>``: the command line. Thin: it parses arguments, calls one function, and maps
:class:`~peagent.errors.PeagentError` to its exit status (see peagent.errors)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path

from peagent import __version__
from peagent.errors import PeagentError, UsageError

log = logging.getLogger("peagent")


def _cmd_inventory(args: argparse.Namespace) -> int:
    from peagent.inventory import collect

    inv = collect(include_virtual=args.all)
    if args.json:
        print(json.dumps(inv.to_dict(), indent=2))
        return 0
    for disk in inv.disks:
        flags = [f for f, on in (("PE medium", disk.pe_medium), ("virtual", disk.virtual),
                                 ("removable", disk.removable),
                                 ("read-only", disk.read_only), ("in use", bool(disk.in_use))) if on]
        print(disk.summary() + (f" [{', '.join(flags)}]" if flags else ""))
        for p in disk.partitions:
            print(f"  {p.path} {p.size / 1e9:.1f} GB {p.fstype or '-'} {p.label or ''}".rstrip())
    for nic in inv.nics:
        print(f"{nic.name} {nic.mac} {nic.driver or '-'} link={'up' if nic.link else 'down'}")
    for pci in inv.pci:
        print(f"pci {pci.slot} {pci.vendor}:{pci.device} class {pci.class_code} {pci.driver or '-'}")
    for usb in inv.usb:
        print(f"usb {usb.path} {usb.vendor}:{usb.product} {usb.product_name or ''}".rstrip())
    dmi = inv.dmi
    print(f"machine: {dmi.sys_vendor or '-'} {dmi.product_name or '-'} serial {dmi.product_serial or '-'} "
          f"uuid {dmi.product_uuid or '-'}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from peagent.deploy import load_task
    from peagent.inventory import collect, from_dict
    from peagent.plan import make_plan

    if args.inventory:
        try:
            inv = from_dict(json.loads(Path(args.inventory).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"cannot read the inventory {args.inventory}: {exc}") from None
    else:
        inv = collect()
    dps = tuple(args.dp)
    task, _ = load_task(args.task, dps, inv)
    plan = make_plan(task, inv, dps)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.render())
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from peagent.cmdline import BootParams, parse_cmdline
    from peagent.deploy import DeployOptions, deploy

    boot = parse_cmdline(Path(args.cmdline).read_text()) if args.cmdline else BootParams()
    run_dir = Path("/run/peagent")
    options = DeployOptions(task=args.task or boot.task, dps=tuple(args.dp) or boot.dps,
                            status=args.status or boot.status, keys=(*boot.keys, *_key_texts(args.key)),
                            journal_dir=run_dir if run_dir.is_dir() else None, firmware=args.set_boot_entry)
    task = deploy(options)
    if args.after_file:
        Path(args.after_file).write_text(task.after + "\n")
    return 0


def _key_texts(given: list[str]) -> tuple[str, ...]:
    """Public keys given on the command line: files (peagent.pub) or the base64 text itself."""
    return tuple(Path(k).read_text().strip() if Path(k).is_file() else k for k in given)


def _rate(text: str | None) -> float | None:
    """A bandwidth like 10M, 500k or 1.5G (bytes per second)."""
    if text is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", text)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--limit-rate: expected bytes per second like 10M, 500k or 1.5G, found {text!r}")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]


def _cmd_write(args: argparse.Namespace) -> int:
    from peagent.image.job import ManifestSource, names_a_manifest, prepare_image
    from peagent.image.sign import trusted_keys
    from peagent.image.thirdparty import StreamSource
    from peagent.image.writer import WriteOptions
    from peagent.progress import Progress
    from peagent.task import check_sha256

    if names_a_manifest(args.source) and not (args.sha256 or args.checksum_url):
        source = ManifestSource(args.source, check_sha256(args.pin, "--pin") if args.pin else None)
    else:
        bmap = None if args.bmap == "none" else args.bmap
        source = StreamSource(args.source, check_sha256(args.sha256, "--sha256") if args.sha256 else None,
                              args.checksum_url, args.size, args.compression, bmap)
    options = WriteOptions(connections=args.connections, direct=not args.no_direct, reuse=args.reuse,
                           journal=Path(args.journal) if args.journal else None, limit_rate=_rate(args.limit_rate),
                           ca=args.ca)
    job = prepare_image(source, tuple(args.dp), keys=trusted_keys(given=_key_texts(args.key)), options=options)
    progress = Progress(job.size, lambda snap: log.info("%s", snap.line("write")))
    lines = job.write(args.target, target_zeroed=args.zeroed, progress=progress.add,
                      on_retry=lambda m: log.warning("retry: %s", m))
    progress.finish()
    for line in lines:
        log.info("%s", line)
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from peagent.files.stack import apply_images
    from peagent.image.sign import trusted_keys
    from peagent.progress import MIB

    keys = trusted_keys(given=_key_texts(args.key))
    applied = apply_images(args.images, Path(args.dir), dps=tuple(args.dp), keys=keys, allow_devices=args.allow_devices)
    for a in applied:
        r = a.report
        log.info("%s %s: %d files, %d dirs, %d symlinks, %d hard links, %d removed, %.1f MiB in %.1f s; fetched "
                 "%.1f MiB; every frame verified", "layer" if a.layer else "base", a.label, r.files, r.dirs,
                 r.symlinks, r.hardlinks, r.removed, r.bytes / MIB, r.seconds, a.fetched / MIB)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from peagent.server.dp import CONFIG_NAME, serve
    except ImportError as exc:  # the PE ships the agent only
        raise UsageError(f"peagent serve is not available here ({exc}): run it on a server with the full "
                         "peagent package") from None
    from peagent.state.model import Secret

    root = Path(args.dir).resolve()
    db = Path(args.db).resolve() if args.db else root.parent / f"{root.name}-status.sqlite"
    admin_token = _secret(args.admin_token_file, "PEAGENT_ADMIN_TOKEN")
    for what, path in (("--db", db), ("--admin-token-file", args.admin_token_file)):
        # Everything under DIR is served to anyone who asks: the database and the admin token must not be.
        if path is not None and Path(path).resolve().is_relative_to(root):
            raise UsageError(f"{what} {path} is inside {root}, which is served to anyone: put it elsewhere")
    config = Path(args.config) if args.config else None
    if config is None and (root / CONFIG_NAME).is_file():
        config = root / CONFIG_NAME
    server = serve(root, args.bind, args.port, Path(args.status_log) if args.status_log else None,
                   upload_token=_secret(args.upload_token_file, "PEAGENT_UPLOAD_TOKEN"),
                   max_upload=args.max_upload, db=db, config=config,
                   admin_token=Secret(admin_token) if admin_token else None, public_url=args.public_url)
    log.info("status in %s; assignments %s; administration %s", db, config or "none (task files as they are)",
             "enabled" if admin_token else "disabled (no --admin-token-file)")
    log.info("serving %s at %s", args.dir, server.url)
    # systemd and test harnesses stop a service with SIGTERM: close the database cleanly then too.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _secret(file: str | None, env: str) -> str | None:
    """A token from a file or the environment (never from the command line: ps shows it)."""
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    return os.environ.get(env) or None


def _cmd_image_build(args: argparse.Namespace) -> int:
    from peagent.image.build import BuildOptions, build_from
    from peagent.image.format import DEFAULT_FRAME
    from peagent.image.sources import TreeSource

    if (args.source is None) == (args.files is None):
        raise UsageError("image build: give a SOURCE or --files DIR (one of them)")
    if args.files is None and (args.base_tree or args.capture):
        raise UsageError("--base-tree and --capture make a file image: they go with --files DIR")
    kind = args.kind or ("files" if args.files else "disk")
    if args.files and kind != "files":
        raise UsageError(f"--files builds a file image (kind files), not --kind {kind}")
    source = TreeSource(args.files, args.base_tree, args.capture) if args.files else args.source
    options = BuildOptions(name=args.name, version=args.version, kind=kind,
                           frame_size=args.frame_size or DEFAULT_FRAME, level=args.level,
                           threads=args.threads or max(1, os.cpu_count() or 1))
    manifest = build_from(source, args.out, options, base=args.base, base_url=args.base_url,
                          key=Path(args.key) if args.key else None,
                          token=_secret(args.token_file, "PEAGENT_UPLOAD_TOKEN"), overwrite=args.overwrite,
                          allow_mounted=args.allow_mounted, progress=lambda snap: log.info("%s", snap.line("build")))
    log.info("built %s %s: %d bytes in %d bytes of blob (%s)", manifest.name, manifest.version, manifest.size,
             manifest.blob.size, args.out)
    return 0


def _keys(args: argparse.Namespace) -> list:
    from peagent.image.inspect import public_keys
    from peagent.image.sign import trusted_keys

    return public_keys(args.key) + trusted_keys()


def _cmd_image_inspect(args: argparse.Namespace) -> int:
    from peagent.image.inspect import inspect_image

    result = inspect_image(args.source, _keys(args), args.pin)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.render())
    return 0


def _cmd_image_verify(args: argparse.Namespace) -> int:
    from peagent.image.verify import verify_image

    report = verify_image(args.source, _keys(args), pin=args.pin, base=args.base)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    report.raise_for_problems()
    return 0


def _cmd_image_diff(args: argparse.Namespace) -> int:
    from peagent.image.inspect import diff_images

    result = diff_images(args.a, args.b)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.render())
    return 0


def _cmd_wim_capture(args: argparse.Namespace) -> int:
    from peagent.files import wim
    from peagent.image.checksums import file_sha256
    from peagent.progress import Progress

    meter = Progress(None, lambda snap: log.info("%s", snap.line("capture")))
    made = wim.capture(args.source, Path(args.wim), args.name, description=args.description,
                       delta_from=Path(args.delta_from) if args.delta_from else None, progress=wim.feed(meter))
    meter.finish()
    image = made.images[-1]
    log.info("%s: image %d %r, %d files, %d bytes of file data%s; sha256 for a task: %s", args.wim, image.index,
             image.name, image.files, image.total_bytes, f", a delta over {args.delta_from}" if args.delta_from else "",
             file_sha256(Path(args.wim)))
    return 0


def _cmd_state_capture(args: argparse.Namespace) -> int:
    from peagent.inplace.detect import identify
    from peagent.state.apply import capture_tree

    root = Path(args.root)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory (mount the old OS's partition, read-only, and name it)")
    found = identify(root)
    captured = capture_tree(root, found.kind, f"{found.name} in {root}", keep_ssh_keys=args.ssh_host_keys,
                            keep_root_password=args.root_password)
    if captured is None:
        raise UsageError(f"{root}: {found.describe()}; peagent captures Linux and Windows")
    print(json.dumps({"os": captured.os, "source": captured.source, "state": captured.state.public(),
                      "notes": list(captured.notes)}, indent=2))
    return 0


def _cmd_wim_info(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from peagent.files import wim

    info = wim.info(Path(args.wim))
    print(json.dumps(asdict(info), indent=2, default=str))
    return 0


def _cmd_drivers_index(args: argparse.Namespace) -> int:
    import time

    from peagent.drivers.store import index_store, write_index
    from peagent.image.sign import load_private_key

    key = load_private_key(Path(args.key)) if args.key else None  # before the walk: a bad key fails fast
    started = time.monotonic()
    index = index_store(Path(args.dir))
    out = Path(args.out or args.dir)
    digest = write_index(index, out, key)
    for warning in index.warnings:
        log.warning("warning: %s", warning)
    print(f"{len(index.packages)} packages ({index.inf_count} INFs, {index.module_count} modules), "
          f"{len(index.warnings)} warnings, in {time.monotonic() - started:.2f} s: {out / 'index.json'} "
          f"({'signed' if key else 'unsigned: a task must pin'} sha256 {digest})")
    return 0


def _cmd_drivers_match(args: argparse.Namespace) -> int:
    import time

    from peagent.drivers.hwids import devices
    from peagent.drivers.match import Target, match
    from peagent.drivers.store import StoreIndex
    from peagent.inventory import from_dict
    from peagent.state.template import Identity

    try:
        inventory = from_dict(json.loads(Path(args.inventory).read_text()))
        index = StoreIndex.from_json(Path(args.index).read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read the inventory or the index: {exc}") from None
    machine = Identity.of(inventory)
    version = None
    if args.os == "windows":
        parts = [int(x) for x in args.windows_version.split(".")] if args.windows_version else []
        if len(parts) != 3:
            raise UsageError(f"--windows-version: expected major.minor.build like 10.0.19045, found "
                             f"{args.windows_version!r}")
        version = (parts[0], parts[1], parts[2])
    target = Target(args.os, args.arch, machine.vendor, machine.model, version, args.windows_label, tuple(args.kernel))
    started = time.monotonic()
    result = match(devices(inventory), index, target)
    elapsed = time.monotonic() - started
    for line in result.lines():
        print(line)
    print(f"{len(result.choices)} device(s) matched, {len(result.unmatched)} without a driver, "
          f"{len(index.packages)} packages, in {elapsed:.3f} s")
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    from peagent.image.sign import generate_keys

    public = generate_keys(Path(args.out))
    print(f"key {public.key_id}: private {Path(args.out) / 'peagent.key'} (keep it secret), "
          f"public {Path(args.out) / 'peagent.pub'}: {public.to_text()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peagent", description="Deploy operating system images safely.")
    parser.add_argument("--version", action="version", version=f"peagent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inventory", help="list this machine's disks, NICs and identity")
    p.add_argument("--json", action="store_true", help="the full inventory as JSON (docs/inventory.md)")
    p.add_argument("--all", action="store_true", help="also loop, device-mapper, MD and other virtual disks")
    p.set_defaults(func=_cmd_inventory)

    p = sub.add_parser("plan", help="show what a deploy of TASK would do, changing nothing")
    p.add_argument("task", help="task file, URL, or path on the DPs")
    p.add_argument("--dp", action="append", default=[], metavar="URL", help="a distribution point")
    p.add_argument("--inventory", metavar="FILE",
                   help="plan for this inventory (JSON) instead of this machine")
    p.add_argument("--json", action="store_true", help="the plan as JSON")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("deploy", help="run a task: select the target, write and verify the image")
    p.add_argument("--task", metavar="REF", help="task file, URL, or path on the DPs "
                   "(default: tasks/<mac>.json, then tasks/default.json on the DPs)")
    p.add_argument("--dp", action="append", default=[], metavar="URL", help="a distribution point")
    p.add_argument("--status", metavar="URL", help="POST status events here")
    p.add_argument("--cmdline", metavar="FILE", help="read peagent.* parameters from a kernel "
                   "command line (the PE passes /proc/cmdline); options override them")
    p.add_argument("--set-boot-entry", action="store_true", help="set this machine's UEFI boot entries for the new "
                   "OS (and load it for kexec): the PE passes it; never on a machine that only writes a disk")
    p.add_argument("--after-file", metavar="FILE", help="write the task's after action here "
                   "(reboot, poweroff, kexec, none) for the caller to carry out")
    p.add_argument("--key", action="append", default=[], metavar="PUB", help="trust this image key (file or text)")
    p.set_defaults(func=_cmd_deploy)

    p = sub.add_parser("apply", help="apply a file image and its layers into a directory, verified")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="a file image (directory, manifest path or URL, or a "
                   "path on the DPs), then layers, applied in this order")
    p.add_argument("dir", help="the directory to apply them into (a mounted filesystem)")
    p.add_argument("--dp", action="append", default=[], metavar="URL", help="a distribution point")
    p.add_argument("--key", action="append", default=[], metavar="PUB", help="trust this image key (file or text)")
    p.add_argument("--allow-devices", action="store_true", help="create the device nodes the images carry")
    p.set_defaults(func=_cmd_apply)

    p = sub.add_parser("write", help="write an image onto a disk or file, verified, resuming what is there")
    p.add_argument("source", help="a peagent image (directory, manifest.json path or URL, or a path on the DPs) or "
                   "a third-party image file or URL (.img, .raw, .gz, .xz, .zst, .bz2)")
    p.add_argument("target", help="a block device or a file")
    p.add_argument("--dp", action="append", default=[], metavar="URL", help="a distribution point")
    p.add_argument("--key", action="append", default=[], metavar="PUB", help="trust this image key (file or text)")
    p.add_argument("--pin", metavar="SHA256", help="trust the manifest with this sha256 (instead of a signature)")
    p.add_argument("--sha256", metavar="HEX", help="third-party image: the sha256 of the raw image")
    p.add_argument("--checksum-url", metavar="URL", help="third-party image: a SHA256SUMS file listing it")
    p.add_argument("--bmap", default="auto", metavar="auto|URL|none", help="third-party image: its bmap")
    p.add_argument("--size", type=int, metavar="BYTES", help="third-party image: its raw size")
    p.add_argument("--compression", default="auto", choices=["auto", "none", "gzip", "xz", "bzip2", "zstd"])
    p.add_argument("--connections", type=int, default=4, help="parallel HTTP connections (default 4)")
    p.add_argument("--no-direct", action="store_true", help="buffered writes instead of O_DIRECT")
    p.add_argument("--reuse", default="auto", choices=["auto", "scan", "none"],
                   help="reuse blocks the target holds elsewhere: auto, scan the target, or none")
    p.add_argument("--journal", metavar="FILE", help="record finished frames here, to continue after a crash")
    p.add_argument("--limit-rate", metavar="RATE", help="bandwidth cap, e.g. 10M (bytes/s)")
    p.add_argument("--ca", metavar="FILE", help="CA bundle for https DPs")
    p.add_argument("--zeroed", action="store_true", help="the target is known to read as zeros (skip holes)")
    p.set_defaults(func=_cmd_write)

    _image_parsers(sub)
    _wim_parsers(sub)
    _drivers_parsers(sub)

    p = sub.add_parser("keys", help="make an ed25519 key pair for signing images")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="where to write peagent.key and peagent.pub")
    p.set_defaults(func=_cmd_keys)

    p = sub.add_parser("serve", help="serve a directory as a distribution point")
    p.add_argument("dir", help="the DP directory (pe/, tasks/, images/, boot.ipxe)")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on (default all)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--db", metavar="FILE", help="the status database (SQLite; default DIR/../<DIR name>-status.sqlite, "
                   "beside DIR: never inside it, DIR is served)")
    p.add_argument("--config", metavar="FILE", help="the assignment rules (default DIR/peagent-serve.json if present)")
    p.add_argument("--admin-token-file", metavar="FILE", help="approve, postpone and cancel with this bearer token "
                   "(or set PEAGENT_ADMIN_TOKEN); without one, administration is off")
    p.add_argument("--public-url", metavar="URL", help="the URL machines reach this server at, for the task's "
                   "status URL and boot scripts (default: the Host they asked)")
    p.add_argument("--status-log", metavar="FILE", help="also append every event received to this file (JSON lines)")
    p.add_argument("--upload-token-file", metavar="FILE", help="accept PUT uploads carrying this bearer token "
                   "(or set PEAGENT_UPLOAD_TOKEN)")
    p.add_argument("--max-upload", type=int, metavar="BYTES", help="largest upload accepted")
    p.set_defaults(func=_cmd_serve)
    return parser


def _wim_parsers(sub: argparse._SubParsersAction) -> None:
    wim = sub.add_parser("wim", help="capture and inspect Windows images (WIM, through wimlib)").add_subparsers(
        dest="wim_command", required=True, metavar="SUBCOMMAND")
    p = wim.add_parser("capture", help="capture a directory or an unmounted NTFS partition (all Windows metadata) "
                       "into a new WIM")
    p.add_argument("source", help="a directory, or an NTFS partition (/dev/sda3), unmounted")
    p.add_argument("wim", help="the WIM to write (.wim; .dwm with --delta-from)")
    p.add_argument("--name", required=True, help="the image's name (wiminfo shows it)")
    p.add_argument("--description")
    p.add_argument("--delta-from", metavar="BASE.wim", help="store only the file data BASE lacks (a delta WIM)")
    p.set_defaults(func=_cmd_wim_capture)
    p = wim.add_parser("info", help="a WIM's images, parts and delta base, as JSON")
    p.add_argument("wim")
    p.set_defaults(func=_cmd_wim_info)


def _drivers_parsers(sub: argparse._SubParsersAction) -> None:
    drivers = sub.add_parser("drivers", help="driver packages matched to the hardware (docs/drivers.md)")
    drivers = drivers.add_subparsers(dest="drivers_command", required=True, metavar="SUBCOMMAND")
    p = drivers.add_parser("index", help="index a driver store (windows/<make>/<model>/<os>/<arch>/<package>, "
                           "linux/<make>/<model>/<package>) into index.json, signed")
    p.add_argument("dir", metavar="DIR", help="the driver store's root")
    p.add_argument("-o", "--out", metavar="OUT", help="the directory to write index.json into (default: DIR)")
    p.add_argument("--key", metavar="KEY", help="sign the index with this private key (peagent keys)")
    p.set_defaults(func=_cmd_drivers_index)
    p = drivers.add_parser("match", help="which package each device of an inventory gets, and why the others lost")
    p.add_argument("--inventory", required=True, metavar="INV", help="a `peagent inventory --json` file")
    p.add_argument("--index", required=True, metavar="IDX", help="a driver store's index.json")
    p.add_argument("--os", choices=("windows", "linux"), required=True, help="the new OS's family")
    p.add_argument("--arch", default="amd64", help="its architecture (amd64, x86, arm64; default amd64)")
    p.add_argument("--windows-version", metavar="M.m.BUILD", help="the Windows version, like 10.0.19045")
    p.add_argument("--windows-label", metavar="LABEL", help="the store's <os> folder for it (win10, win11, ...)")
    p.add_argument("--kernel", action="append", default=[], metavar="RELEASE",
                   help="a kernel release the Linux image has (repeatable)")
    p.set_defaults(func=_cmd_drivers_match)


def _image_parsers(sub: argparse._SubParsersAction) -> None:
    state = sub.add_parser("state", help="machine state: what a deploy would capture from an old OS").add_subparsers(
        dest="state_command", required=True)
    p = state.add_parser("capture", help="show what would be captured from an OS tree mounted at ROOT (secrets "
                         "shown as <secret>)")
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--ssh-host-keys", action="store_true", help="capture the SSH host keys too (state.ssh_host_keys: "
                   "keep)")
    p.add_argument("--root-password", action="store_true", help="capture root's password hash too (migrate "
                   "admin_password)")
    p.set_defaults(func=_cmd_state_capture)

    image = sub.add_parser("image", help="build, inspect, verify and compare images").add_subparsers(
        dest="image_command", required=True, metavar="SUBCOMMAND")

    p = image.add_parser("build", help="build an image from a raw file, a block device, qcow2 or .gz/.xz/.zst/.bz2, "
                         "or a directory tree (--files)")
    p.add_argument("source", nargs="?", help="raw file, block device, virtual disk or compressed raw image")
    p.add_argument("-o", "--out", required=True, help="output directory, or an http(s) URL to PUT to")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--kind", choices=["disk", "partition", "files"], help="default disk; files with --files")
    p.add_argument("--files", metavar="DIR", help="a file image of this directory tree (a pax tar stream made on "
                   "the fly; docs/image-build.md)")
    p.add_argument("--base-tree", metavar="DIR", help="with --files: a layer, what changed from this tree to DIR")
    p.add_argument("--capture", action="store_true", help="with --files: leave out what a captured Linux root "
                   "must not carry (/proc, /tmp, machine-id, SSH host keys, ...)")
    p.add_argument("--frame-size", type=int, metavar="BYTES", help="bytes per frame (default 262144)")
    p.add_argument("--level", type=int, default=9, help="zstd level (default 9)")
    p.add_argument("--threads", type=int, help="compression threads (default: the CPUs)")
    p.add_argument("--base", metavar="SRC", help="make a differencing image over this base image")
    p.add_argument("--base-url", metavar="URL", help="the base's URL as the new manifest should name it")
    p.add_argument("--key", metavar="FILE", help="sign with this private key (peagent keys)")
    p.add_argument("--token-file", metavar="FILE", help="bearer token for an upload (or PEAGENT_UPLOAD_TOKEN)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing image at the output")
    p.add_argument("--allow-mounted", action="store_true", help="capture a block device even while mounted")
    p.set_defaults(func=_cmd_image_build)

    for name, func, what in (("inspect", _cmd_image_inspect, "summarise an image and its signature"),
                             ("verify", _cmd_image_verify, "check every frame of an image against its manifest")):
        p = image.add_parser(name, help=what)
        p.add_argument("source", help="image directory, manifest path or URL")
        p.add_argument("--key", action="append", default=[], metavar="PUB", help="a trusted public key (file or text)")
        p.add_argument("--pin", metavar="SHA256", help="trust the manifest with this sha256")
        p.add_argument("--json", action="store_true")
        if name == "verify":
            p.add_argument("--base", metavar="SRC", help="where the base image is, if not where the manifest says")
        p.set_defaults(func=func)

    p = image.add_parser("diff", help="what re-imaging a disk holding A with B would fetch")
    p.add_argument("a", help="image A (on the disk)")
    p.add_argument("b", help="image B (to deploy)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_image_diff)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="peagent: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except PeagentError as exc:
        log.error("error [%s]: %s", exc.code, exc)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
