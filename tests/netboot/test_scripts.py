"""The boot scripts: what peagent.ipxe and boot.ipxe boot, from where, with which kernel command
line, and what they do when something is missing; GRUB's config is syntax-checked with GRUB's
own tool. The iPXE scripts run on a model of iPXE (tests.support.ipxe); the VM tests run them on
the real one, and found the settings this model is fed (e.g. that ${next-server} is the site
DHCP server's address when a proxy answered)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from peagent.cmdline import parse_cmdline
from tests.support import ipxe

NETBOOT = Path(__file__).resolve().parents[2] / "netboot"
FIRST = (NETBOOT / "ipxe" / "peagent.ipxe").read_text()
BOOT = (NETBOOT / "ipxe" / "boot.ipxe").read_text()
PXE = "10.77.0.2"  # the PXE server (proxy-DHCP + TFTP + DP)
SITE_DHCP = "10.77.0.1"  # the site's DHCP server, which names itself as next-server
TFTP = f"tftp://{PXE}/peagent.ipxe"


def dp_files(dp: str, *, kernel: bool = True) -> dict[str, str]:
    files = {f"{dp}/boot.ipxe": BOOT, f"{dp}/pe/initrd.zst": "initrd"}
    if kernel:
        files[f"{dp}/pe/vmlinuz"] = "kernel"
    return files


class Machine(ipxe.Machine):
    """iPXE and a static DP: a URL's query does not change the file served (nginx ignores it), and
    ``${name:uristring}`` is the setting URI-encoded, as iPXE formats it."""

    def _fetch(self, url: str, base: str) -> tuple[str, str | None]:
        target, text = super()._fetch(url, base)
        if text is None and "?" in target:
            text = self.files.get(target.split("?", 1)[0])
            if text is not None:
                self.files[target] = text  # what the chained script's run looks up
        return target, text

    def _expand(self, line: str) -> str:
        for name, value in self.settings.items():
            line = line.replace("${" + name + ":uristring}", quote(value, safe=""))
        return super()._expand(line.replace(":uristring}", "}"))


def fetched(m: Machine, url: str) -> int:
    """How many times ``url`` was asked for, whatever the query."""
    return sum(u.split("?", 1)[0] == url for u in m.fetched)


def ipxe_machine(settings: dict[str, str], files: dict[str, str], **kwargs: object) -> Machine:
    return Machine(dict(settings), {TFTP: FIRST, **files}, **kwargs)  # type: ignore[arg-type]


# Settings as iPXE has them after each kind of DHCP exchange (seen in the VM tests).
BIOS_PROXY = {"platform": "pcbios", "next-server": SITE_DHCP, "pxebs/next-server": PXE}
UEFI_PROXY = {"platform": "efi", "next-server": SITE_DHCP, "proxydhcp/next-server": PXE}
NO_PROXY = {"platform": "efi", "next-server": PXE}


@pytest.mark.parametrize("settings", [BIOS_PROXY, UEFI_PROXY, NO_PROXY],
                         ids=["bios-proxy", "uefi-proxy", "dhcp"])
def test_the_chain_boots_the_pe_from_the_pxe_server(settings: dict[str, str]) -> None:
    m = ipxe_machine(settings, dp_files(f"http://{PXE}"))
    m.run(TFTP)
    assert m.booted is not None, m.echoes
    kernel, cmdline, initrds = m.booted
    assert kernel == f"http://{PXE}/pe/vmlinuz"
    assert initrds == [(f"http://{PXE}/pe/initrd.zst", "initrd.zst")]
    # EFI iPXE (2019) passes the initrd only by name: the name on the kernel line must match.
    assert "initrd=initrd.zst" in cmdline.split()
    assert parse_cmdline(cmdline).dps == (f"http://{PXE}",)


def test_the_kernel_line_has_the_consoles_serial_last_and_panic_reboot() -> None:
    m = ipxe_machine(BIOS_PROXY, dp_files(f"http://{PXE}"))
    m.run(TFTP)
    assert m.booted is not None
    words = m.booted[1].split()
    # The last console= is /dev/console: the serial port, which labs and tests capture.
    assert [w for w in words if w.startswith("console=")] == ["console=tty0", "console=ttyS0,115200"]
    assert {"panic=-1", "quiet"} <= set(words)


def test_site_settings_choose_the_dp_task_and_extra_parameters() -> None:
    dp = "http://192.168.5.9:8080"
    site = ("#!ipxe\nset peagent-dp " + dp + "\nset peagent-task " + dp + "/tasks/lab.json\n"
            "set peagent-extra peagent.shell peagent.status=" + dp + "/status\n")
    m = ipxe_machine(UEFI_PROXY, {f"tftp://{PXE}/peagent-site.ipxe": site, **dp_files(dp)})
    m.run(TFTP)
    assert m.booted is not None, m.echoes
    assert m.booted[0] == f"{dp}/pe/vmlinuz"
    params = parse_cmdline(m.booted[1])
    assert params.dps == (dp,)
    assert params.task == f"{dp}/tasks/lab.json"
    assert params.status == f"{dp}/status"
    assert params.shell


def test_a_dp_set_before_chaining_wins_and_no_site_file_is_asked_for() -> None:
    dp = "http://10.0.2.2:8080"  # as a QEMU test sets it
    m = ipxe_machine({**NO_PROXY, "peagent-dp": dp}, dp_files(dp))
    m.run(TFTP)
    assert m.booted is not None
    assert parse_cmdline(m.booted[1]).dps == (dp,)
    assert not any("peagent-site" in url for url in m.fetched)


def test_the_dp_is_asked_with_the_machines_identity_unless_the_site_chose_the_task() -> None:
    # peagent serve decides by the query; iPXE formats mac and uuid itself, free text is URI-encoded.
    identity = {"mac": "52:54:00:12:34:56", "uuid": "4c4c4544-0042-3510-8052-b2c04f4d3732",
                "serial": "SN 42/7", "manufacturer": "LENOVO", "product": "ThinkPad T14 & co"}
    m = ipxe_machine({**BIOS_PROXY, **identity}, dp_files(f"http://{PXE}"))
    m.run(TFTP)
    assert m.booted is not None
    asked = next(u for u in m.fetched if u.startswith(f"http://{PXE}/boot.ipxe"))
    assert urlsplit(asked).path == "/boot.ipxe"
    assert parse_qs(urlsplit(asked).query) == {
        "mac": ["52:54:00:12:34:56"], "uuid": ["4c4c4544-0042-3510-8052-b2c04f4d3732"], "serial": ["SN 42/7"],
        "vendor": ["LENOVO"], "model": ["ThinkPad T14 & co"]}
    dp = "http://192.168.5.9:8080"
    site = f"#!ipxe\nset peagent-dp {dp}\nset peagent-task {dp}/tasks/lab.json\n"
    m = ipxe_machine({**UEFI_PROXY, **identity}, {f"tftp://{PXE}/peagent-site.ipxe": site, **dp_files(dp)})
    m.run(TFTP)
    assert m.booted is not None
    assert f"{dp}/boot.ipxe" in m.fetched


def test_boot_ipxe_alone_finds_the_pxe_server_too() -> None:
    # boot.ipxe served straight by TFTP (no first stage): the same choice of DP.
    m = Machine(dict(UEFI_PROXY), {f"tftp://{PXE}/boot.ipxe": BOOT, **dp_files(f"http://{PXE}")})
    m.run(f"tftp://{PXE}/boot.ipxe")
    assert m.booted is not None
    assert parse_cmdline(m.booted[1]).dps == (f"http://{PXE}",)


def test_a_missing_kernel_is_reported_and_retried_not_given_up() -> None:
    m = ipxe_machine(BIOS_PROXY, dp_files(f"http://{PXE}", kernel=False), max_lines=300)
    assert m.run(TFTP) is None  # still going when the model stopped it
    assert m.booted is None
    assert fetched(m, f"http://{PXE}/pe/vmlinuz") >= 3
    assert any("could not boot the PE" in e for e in m.echoes)


def test_an_unreachable_dp_is_retried_and_a_key_gives_a_shell() -> None:
    m = ipxe_machine(BIOS_PROXY, {}, max_lines=200)
    assert m.run(TFTP) is None
    assert fetched(m, f"http://{PXE}/boot.ipxe") >= 3
    assert any("could not fetch or run" in e for e in m.echoes)
    m = ipxe_machine(BIOS_PROXY, {}, max_lines=200, key_pressed=True)
    m.run(TFTP)
    assert m.shells >= 1


def test_no_next_server_anywhere_says_so() -> None:
    m = ipxe_machine({"platform": "efi"}, {})
    m.run(TFTP)
    assert m.booted is None
    assert any("no DP" in e for e in m.echoes)
    assert m.shells == 1


@pytest.mark.parametrize("script", ["peagent.ipxe", "boot.ipxe"])
def test_scripts_are_ipxe_scripts_and_every_command_that_may_fail_is_handled(script: str) -> None:
    text = (NETBOOT / "ipxe" / script).read_text()
    assert text.startswith("#!ipxe\n")
    # A failing command ends an iPXE script: downloads must be followed by "|| goto" (or be
    # part of a handled chain).
    for line in text.splitlines():
        if re.match(r"(chain|kernel|initrd|imgfetch|boot)\b", line):
            assert "||" in line, f"{script}: unhandled failure in: {line}"


def test_grub_cfg_passes_grub_script_check() -> None:
    if shutil.which("grub-script-check") is None:
        pytest.skip("grub-script-check missing (Debian package grub-common)")
    result = subprocess.run(["grub-script-check", str(NETBOOT / "grub" / "grub.cfg")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grub_cfg_boots_the_same_files_with_the_same_parameters() -> None:
    cfg = (NETBOOT / "grub" / "grub.cfg").read_text()
    linux = next(line for line in cfg.splitlines() if line.strip().startswith("if linux "))
    assert "(http,$peagent_dp_host)/pe/vmlinuz" in linux
    assert "console=tty0 console=ttyS0,115200 panic=-1 quiet $peagent_args" in linux
    assert "(http,$peagent_dp_host)/pe/initrd.zst" in cfg
    assert 'set peagent_args="peagent.dp=http://$peagent_dp_host"' in cfg
    assert 'set peagent_dp_host="$net_default_server"' in cfg
