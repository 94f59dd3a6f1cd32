"""The QEMU bench: boot the PE (or any disk) in a VM under TCG and watch its serial console.

A :class:`Machine` describes the VM (firmware, how it boots, its disks and NIC); a :class:`VM`
runs it: it starts QEMU (optionally inside a network namespace, so the guest can reach only
servers the test started there), collects the serial console with the time each byte arrived,
lets a test wait for console patterns, type on the console, and drive the power over QMP, and
always ends it (gracefully, or with SIGKILL: a hard power-off). Every wait has a timeout, and
the console log is written to the VM's directory as it arrives, so a failing test leaves it.

Firmware is QEMU's own: SeaBIOS for BIOS, OVMF for UEFI, and the iPXE ROMs for network boot.
KVM is off unless PEAGENT_KVM=1 (it hangs on the machines CI runs on).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


class VMError(AssertionError):
    """A VM did not do what the test waited for; the message carries the console's tail."""


@dataclass
class Drive:
    path: Path
    bus: str = "virtio"  # virtio | nvme | sata | usb
    serial: str | None = None
    format: str = "raw"
    media: str = "disk"  # disk | cdrom
    bootindex: int | None = None
    cache: str = "writeback"  # "none" so a hard power-off loses what the guest did not flush
    readonly: bool = False


@dataclass
class Machine:
    firmware: str = "bios"  # bios | uefi
    memory_mib: int = 1536
    cpus: int = 2
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    drives: list[Drive] = field(default_factory=list)
    nic: str | None = "virtio-net-pci"  # None: no network at all
    tftp_dir: Path | None = None
    bootfile: str | None = None
    pxe: bool = False  # boot from the NIC first
    uefi_vars: Path | None = None  # keep NVRAM across runs (a "reboot" into a new QEMU)
    no_reboot: bool = True  # a guest reboot (or reset) ends QEMU, so tests see it happen
    extra: list[str] = field(default_factory=list)

    def argv(self, workdir: Path, qmp_socket: Path) -> list[str]:
        accel = ["-accel", "kvm", "-cpu", "host"] if os.environ.get("PEAGENT_KVM") == "1" else \
            ["-accel", "tcg", "-cpu", "max"]
        # -nodefaults: no stray CD-ROM drive or VGA card, only the devices described here.
        argv = ["qemu-system-x86_64", *accel, "-machine", "q35", "-nodefaults", "-m", str(self.memory_mib),
                "-smp", str(self.cpus), "-display", "none", "-serial", "stdio",
                "-monitor", "none", "-qmp", f"unix:{qmp_socket},server=on,wait=off"]
        if self.no_reboot:
            argv.append("-no-reboot")
        if self.firmware == "uefi":
            vars_file = self.uefi_vars or workdir / "OVMF_VARS.fd"
            if not vars_file.exists():
                shutil.copyfile(OVMF_VARS, vars_file)
            argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,file={vars_file}"]
        if self.kernel:
            argv += ["-kernel", str(self.kernel), "-append", self.append]
            if self.initrd:
                argv += ["-initrd", str(self.initrd)]
        argv += self._drives()
        if self.nic:
            netdev = "user,id=n0"
            if self.tftp_dir:
                netdev += f",tftp={self.tftp_dir}"
            if self.bootfile:
                netdev += f",bootfile={self.bootfile}"
            nic = f"{self.nic},netdev=n0"
            if self.pxe:
                nic += ",bootindex=0"
            argv += ["-netdev", netdev, "-device", nic]
        else:
            argv += ["-nic", "none"]
        return argv + self.extra

    def _drives(self) -> list[str]:
        argv: list[str] = []
        buses = {d.bus for d in self.drives}
        if "sata" in buses:
            argv += ["-device", "ahci,id=ahci0"]
        if "usb" in buses:
            argv += ["-device", "qemu-xhci,id=xhci"]
        sata_port = 0
        for i, d in enumerate(self.drives):
            drive = f"file={d.path},format={d.format},if=none,id=d{i},cache={d.cache}"
            if d.readonly or d.media == "cdrom":
                drive += ",readonly=on"
            argv += ["-drive", drive]
            opts = f"drive=d{i}"
            if d.serial:
                opts += f",serial={d.serial}"
            if d.bootindex is not None:
                opts += f",bootindex={d.bootindex}"
            if d.bus == "virtio":
                argv += ["-device", f"virtio-blk-pci,{opts}"]
            elif d.bus == "nvme":
                argv += ["-device", f"nvme,{opts}"]
            elif d.bus == "sata":
                kind = "ide-cd" if d.media == "cdrom" else "ide-hd"
                argv += ["-device", f"{kind},bus=ahci0.{sata_port},{opts}"]
                sata_port += 1
            elif d.bus == "usb":
                argv += ["-device", f"usb-storage,bus=xhci.0,{opts}"]
            else:
                raise ValueError(f"unknown drive bus {d.bus!r}")
        return argv


class VM:
    """A running QEMU; use as a context manager so that it always ends."""

    def __init__(self, machine: Machine, workdir: Path, netns_prefix: list[str] | None = None,
                 name: str = "vm", tee: TextIO | None = None) -> None:
        self.machine = machine
        self.tee = tee  # also copy the console here as it arrives (the demo shows it live)
        self.workdir = workdir
        self.name = name
        self.netns_prefix = netns_prefix or []
        self.log_path = workdir / f"{name}-console.log"
        # Not in workdir: a socket's path must be shorter than 108 bytes, and workdir is named for the test.
        self._qmp_dir = Path(tempfile.mkdtemp(prefix="peagent-qmp-"))
        self.qmp_path = self._qmp_dir / f"{name}.sock"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self._buffer = bytearray()
        self._clean = bytearray()
        self._arrivals: list[tuple[int, float]] = []  # (end offset in _clean, seconds since start)
        self._lock = threading.Condition()
        self._reader: threading.Thread | None = None
        self._cursor = 0  # console position after the last expect()

    # --- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> VM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [*self.netns_prefix, *self.machine.argv(self.workdir, self.qmp_path)]
        (self.workdir / f"{self.name}-argv.txt").write_text(" ".join(argv) + "\n")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read_console, daemon=True)
        self._reader.start()

    def close(self, timeout: float = 5.0) -> None:
        """End the VM: a QMP quit, then SIGKILL if it lingers."""
        if self.proc is None:
            shutil.rmtree(self._qmp_dir, ignore_errors=True)
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, VMError):
                self.qmp("quit")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._reader:
            self._reader.join(timeout)
        if self.proc.stdin:
            self.proc.stdin.close()
        shutil.rmtree(self._qmp_dir, ignore_errors=True)

    def kill(self) -> None:
        """Hard power-off: SIGKILL, the guest gets no chance to flush anything."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise VMError(f"{self.name}: still running after {timeout:.0f} s\n{self.tail()}") from None
        if self._reader:
            self._reader.join(5)
        return code

    # --- console -----------------------------------------------------------------------------
    def _read_console(self) -> None:
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        with self.log_path.open("wb") as log:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                if self.tee:
                    self.tee.write(chunk.decode(errors="replace"))
                    self.tee.flush()
                with self._lock:
                    self._buffer += chunk
                    self._clean += _ANSI.sub(b"", chunk)
                    self._arrivals.append((len(self._clean), time.monotonic() - self.started))
                    self._lock.notify_all()
        with self._lock:
            self._lock.notify_all()

    @property
    def console(self) -> str:
        with self._lock:
            return self._clean.decode(errors="replace")

    def tail(self, lines: int = 40) -> str:
        text = "\n".join(self.console.splitlines()[-lines:])
        return f"--- last console lines of {self.name} (full log: {self.log_path}) ---\n{text}"

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) on the console after the previous match.

        The console arrives in pieces and a match is taken as soon as it exists, so a pattern
        whose end can stretch (``[^\\n]*``, ``\\d+``) must end with ``\\n`` to get a whole line.
        """
        regex = re.compile(pattern.encode(), re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                m = regex.search(self._clean, self._cursor)
                if m:
                    self._cursor = m.end()
                    text = re.compile(pattern, re.MULTILINE).search(
                        self._clean[m.start():m.end()].decode(errors="replace"))
                    assert text is not None
                    self.last_match_time = self._time_at(m.end())
                    return text
                remaining = deadline - time.monotonic()
                exited = self.proc is not None and self.proc.poll() is not None and \
                    (self._reader is None or not self._reader.is_alive())
                if remaining <= 0 or exited:
                    why = "QEMU exited" if exited else f"{timeout:.0f} s passed"
                    raise VMError(f"{self.name}: {pattern!r} not seen ({why})\n{self.tail()}")
                self._lock.wait(min(remaining, 1.0))

    def _time_at(self, offset: int) -> float:
        for end, t in self._arrivals:
            if end >= offset:
                return t
        return time.monotonic() - self.started

    def send(self, text: str) -> None:
        """Type on the serial console."""
        assert self.proc and self.proc.stdin
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    # --- QMP ---------------------------------------------------------------------------------
    def qmp(self, command: str, **arguments: object) -> object:
        """Run one QMP command; returns its "return" value."""
        deadline = time.monotonic() + 10
        while not self.qmp_path.exists():
            if time.monotonic() > deadline:
                raise VMError(f"{self.name}: no QMP socket")
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.qmp_path))
            stream = sock.makefile("rwb")
            json.loads(stream.readline())  # greeting
            for cmd, args in (("qmp_capabilities", {}), (command, arguments)):
                msg: dict[str, object] = {"execute": cmd}
                if args:
                    msg["arguments"] = args
                stream.write(json.dumps(msg).encode() + b"\n")
                stream.flush()
                while True:
                    line = stream.readline()
                    if not line:
                        if cmd == "quit":
                            return None
                        raise VMError(f"{self.name}: QMP closed during {cmd}")
                    reply = json.loads(line)
                    if "event" in reply:
                        continue
                    if "error" in reply:
                        raise VMError(f"{self.name}: QMP {cmd}: {reply['error']}")
                    break
            return reply.get("return")
