"""``peagent <command>``: the command line. Thin: it parses arguments, calls one function, and maps
:class:`~peagent.errors.PeagentError` to its exit status (see peagent.errors)."""

from __future__ import annotations

import argparse
import json
import logging
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
    options = DeployOptions(task=args.task or boot.task, dps=tuple(args.dp) or boot.dps,
                            status=args.status or boot.status)
    task = deploy(options)
    if args.after_file:
        Path(args.after_file).write_text(task.after + "\n")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from peagent.server.dp import serve

    server = serve(Path(args.dir), args.bind, args.port,
                   Path(args.status_log) if args.status_log else None)
    log.info("serving %s at %s", args.dir, server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
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
    p.add_argument("--after-file", metavar="FILE", help="write the task's after action here "
                   "(reboot, poweroff, none) for the caller to carry out")
    p.set_defaults(func=_cmd_deploy)

    p = sub.add_parser("keys", help="make an ed25519 key pair for signing images")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="where to write peagent.key and peagent.pub")
    p.set_defaults(func=_cmd_keys)

    p = sub.add_parser("serve", help="serve a directory as a distribution point")
    p.add_argument("dir", help="the DP directory (pe/, tasks/, images/, boot.ipxe)")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on (default all)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--status-log", metavar="FILE", help="append POSTed /status events to this file")
    p.set_defaults(func=_cmd_serve)
    return parser


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
