"""A model of the part of iPXE's script language that peagent's scripts use, to test their logic.

It is not iPXE: the VM tests (tests/netboot/test_pxe_vm.py) boot the real one. It lets the
fast tests ask "given these DHCP settings and these files, what does the script boot, with
which kernel command line, and what does it do when a download fails?" without QEMU.
The semantics follow iPXE's ``exec.c`` and ``script.c``:

* settings are expanded in the whole line first (``${name}``, unset is empty; scoped names
  such as ``pxebs/next-server`` are plain keys here), then the line is split on whitespace;
* ``||`` runs the next command only if the status so far is a failure, ``&&`` only if it is
  a success; an empty command (after a trailing ``||``) succeeds;
* a line that ends in failure ends the script with that failure; ``goto`` jumps to ``:label``
  once its line is done; a chained script runs nested and its status is ``chain``'s;
* lines starting with ``#`` are comments.

``boot`` ends the run (the kernel, its command line and initrds are recorded); a script that
never boots is stopped after ``max_lines`` lines, which is how retry loops are observed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Booted(Exception):
    """Control flow: the script ran ``boot`` with a kernel loaded."""


class TooLong(Exception):
    """Control flow: the script ran more than ``max_lines`` lines (a retry loop, usually)."""


@dataclass
class Machine:
    """iPXE's state: settings, the files it could fetch (URL -> text), what it did."""

    settings: dict[str, str]
    files: dict[str, str]
    max_lines: int = 500
    key_pressed: bool = False  # what "prompt" sees
    echoes: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)  # every URL asked for, found or not
    kernel: tuple[str, str] | None = None  # (URL, command line)
    initrds: list[tuple[str, str]] = field(default_factory=list)  # (URL, name)
    booted: tuple[str, str, list[tuple[str, str]]] | None = None
    shells: int = 0
    lines_run: int = 0

    def run(self, url: str) -> int | None:
        """Run the script at ``url`` (which must be in ``files``); None if it booted or ran too long."""
        try:
            return self._chain(url)
        except (Booted, TooLong):
            return None

    def _fetch(self, url: str, base: str) -> tuple[str, str | None]:
        """(absolute URL, its text or None if there is no such file)."""
        if "://" not in url:  # relative: against the running script's URL, as iPXE's cwuri
            url = base.rsplit("/", 1)[0] + "/" + url
        self.fetched.append(url)
        return url, self.files.get(url)

    def _chain(self, url: str) -> int:
        text = self.files[url]
        if not text.startswith("#!ipxe"):
            raise ValueError(f"{url} is not an iPXE script")
        lines = text.splitlines()
        labels = {line[1:].strip(): n for n, line in enumerate(lines) if line.startswith(":")}
        pc = 0
        while pc < len(lines):
            self.lines_run += 1
            if self.lines_run > self.max_lines:
                raise TooLong
            line, pc = lines[pc].strip(), pc + 1
            if not line or line.startswith(("#", ":")):
                continue
            status, jump = self._line(line, url)
            if jump is not None:
                if jump not in labels:
                    return 1
                pc = labels[jump] + 1
            elif status != 0:
                return status
        return 0

    def _line(self, line: str, url: str) -> tuple[int, str | None]:
        words = self._expand(line).split()
        status, run_next, jump = 0, True, None
        command: list[str] = []
        for word in [*words, "&&"]:  # a final separator flushes the last command
            if word not in ("||", "&&"):
                command.append(word)
                continue
            if run_next:
                status, target = self._command(command, url)
                jump = target if target is not None else jump
            command = []
            run_next = status != 0 if word == "||" else status == 0
        return status, jump

    def _expand(self, line: str) -> str:
        out, i = [], 0
        while (start := line.find("${", i)) >= 0:
            end = line.index("}", start)
            out += [line[i:start], self.settings.get(line[start + 2:end], "")]
            i = end + 1
        return "".join([*out, line[i:]])

    def _command(self, argv: list[str], url: str) -> tuple[int, str | None]:
        """Run one command: (status, label to jump to or None)."""
        if not argv:
            return 0, None
        name, args = argv[0], [a for a in argv[1:] if not a.startswith("--")]
        if name == "set":
            self.settings[args[0]] = " ".join(args[1:])
        elif name == "isset":
            return (0 if args else 1), None
        elif name == "goto":
            return 0, args[0]
        elif name == "echo":
            self.echoes.append(" ".join(argv[1:]))
        elif name == "chain":
            target, text = self._fetch(args[0], url)
            return (1 if text is None else self._chain(target)), None
        elif name == "kernel":
            target, text = self._fetch(args[0], url)
            if text is None:
                return 1, None
            self.kernel = (target, " ".join(argv[2:]))
        elif name == "initrd":
            # "initrd --name NAME URL": the image's name, else the URL's last part.
            target, text = self._fetch(args[-1], url)
            if text is None:
                return 1, None
            image_name = argv[argv.index("--name") + 1] if "--name" in argv else target.rsplit("/", 1)[-1]
            self.initrds.append((target, image_name))
        elif name == "boot":
            if self.kernel is None:
                return 1, None
            self.booted = (self.kernel[0], self.kernel[1], list(self.initrds))
            raise Booted
        elif name == "imgfree":
            self.kernel, self.initrds = None, []
        elif name == "prompt":
            return (0 if self.key_pressed else 1), None
        elif name == "shell":
            self.shells += 1
        else:
            raise ValueError(f"command not modelled: {name}")
        return 0, None
