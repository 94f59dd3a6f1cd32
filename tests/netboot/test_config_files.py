"""The shipped configuration files and scripts, without a network: dnsmasq accepts the proxy
configuration with the site values given the two documented ways; make-tftp-root builds a
complete, world-readable, idempotent TFTP root and fails clearly when a source is missing."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

NETBOOT = Path(__file__).resolve().parents[2] / "netboot"
PROXY_CONF = NETBOOT / "dnsmasq" / "peagent-proxy.conf"
MAKE_TFTP_ROOT = NETBOOT / "make-tftp-root"
IPXE = Path("/usr/lib/ipxe")


def dnsmasq_test(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("dnsmasq") is None:
        pytest.fail("dnsmasq is missing: run scripts/install-deps")
    return subprocess.run(["dnsmasq", "--test", *args], capture_output=True, text=True)


def test_dnsmasq_accepts_the_config_with_site_values_on_the_command_line(tmp_path: Path) -> None:
    result = dnsmasq_test(f"--conf-file={PROXY_CONF}", "--dhcp-range=192.168.1.0,proxy",
                          f"--tftp-root={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "syntax check OK" in result.stderr


def test_dnsmasq_accepts_the_config_with_site_values_in_a_drop_in(tmp_path: Path) -> None:
    # The drop-in of netboot/README.md, e.g. /etc/dnsmasq.d/peagent.conf.
    drop_in = tmp_path / "peagent.conf"
    drop_in.write_text(f"conf-file={PROXY_CONF}\ndhcp-range=192.168.1.0,proxy\ntftp-root={tmp_path}\n"
                       "interface=eth0\n")
    result = dnsmasq_test(f"--conf-file={drop_in}")
    assert result.returncode == 0, result.stderr


def test_dnsmasq_test_does_reject_a_broken_config(tmp_path: Path) -> None:
    # The check above means something only if dnsmasq --test can fail.
    broken = tmp_path / "broken.conf"
    broken.write_text(PROXY_CONF.read_text() + "pxe-service=tag:ipxe,NoSuchArch,menu,file\n")
    assert dnsmasq_test(f"--conf-file={broken}").returncode != 0


def test_proxy_config_is_proxy_only_no_dns_and_names_no_site() -> None:
    lines = [line.strip() for line in PROXY_CONF.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert "port=0" in lines
    assert "enable-tftp" in lines
    # Site values come from the command line or a drop-in: the shipped file has none.
    assert not [line for line in lines if line.startswith(("dhcp-range", "tftp-root", "interface"))]


def sha256_tree(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


def make_tftp_root(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(MAKE_TFTP_ROOT), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_make_tftp_root_assembles_every_boot_file(tmp_path: Path) -> None:
    root = tmp_path / "tftp"
    result = make_tftp_root(str(root))
    assert result.returncode == 0, result.stderr
    assert (root / "undionly.kpxe").read_bytes() == (IPXE / "undionly.kpxe").read_bytes()
    assert (root / "ipxe.efi").read_bytes() == (IPXE / "ipxe.efi").read_bytes()
    assert (root / "peagent.ipxe").read_bytes() == (NETBOOT / "ipxe" / "peagent.ipxe").read_bytes()
    grub = (root / "grubnetx64.efi").read_bytes()
    assert grub[:2] == b"MZ" and b"PE\0\0" in grub[:512], "an EFI (PE32+) executable"
    assert b"peagent.dp=http://$peagent_dp_host" in grub, "grub.cfg is embedded"
    assert not (root / "peagent-site.ipxe").exists()
    assert not (root / "undionly.kpxe").is_symlink() and not (root / "ipxe.efi").is_symlink()
    # dnsmasq serves TFTP after dropping root: everything must be world-readable.
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    for path in root.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_make_tftp_root_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "tftp"
    assert make_tftp_root(str(root)).returncode == 0
    (root / "site-notes.txt").write_text("kept\n")
    first = sha256_tree(root)
    result = make_tftp_root(str(root))
    assert result.returncode == 0, result.stderr
    assert sha256_tree(root) == first
    hidden = {p.name for p in root.iterdir() if p.name.startswith(".")}
    assert hidden == {".grubnetx64.inputs"}, "no temporary files left behind"


def test_make_tftp_root_dp_writes_site_files_for_ipxe_and_grub(tmp_path: Path) -> None:
    root = tmp_path / "tftp"
    result = make_tftp_root(str(root), "--dp", "http://192.168.1.5/")
    assert result.returncode == 0, result.stderr
    assert (root / "peagent-site.ipxe").read_text().splitlines()[-1] == "set peagent-dp http://192.168.1.5"
    assert (root / "peagent-site.cfg").read_text().splitlines()[-1] == "set peagent_dp_host=192.168.1.5"
    assert b"set peagent_dp_host=192.168.1.5" in (root / "grubnetx64.efi").read_bytes()

    # GRUB's http takes no port: iPXE gets the URL, GRUB falls back, and the user is told.
    result = make_tftp_root(str(root), "--dp", "http://192.168.1.5:8080")
    assert result.returncode == 0, result.stderr
    assert "GRUB can only use http://HOST" in result.stderr
    assert (root / "peagent-site.ipxe").read_text().splitlines()[-1] == "set peagent-dp http://192.168.1.5:8080"
    assert not (root / "peagent-site.cfg").exists()
    assert b"set peagent_dp_host=192.168.1.5" not in (root / "grubnetx64.efi").read_bytes()


@pytest.mark.parametrize("dp", ["ftp://server/", "server", "http://"])
def test_make_tftp_root_refuses_a_bad_dp(tmp_path: Path, dp: str) -> None:
    result = make_tftp_root(str(tmp_path / "tftp"), "--dp", dp)
    assert result.returncode != 0
    assert "--dp wants an http:// or https:// URL" in result.stderr
    assert not (tmp_path / "tftp").exists()


def test_make_tftp_root_names_a_missing_source_and_touches_nothing(tmp_path: Path) -> None:
    fake = tmp_path / "ipxe"
    fake.mkdir()
    (fake / "undionly.kpxe").write_bytes(b"x")  # ipxe.efi missing
    result = make_tftp_root(str(tmp_path / "tftp"), env={"IPXE_DIR": str(fake)})
    assert result.returncode != 0
    assert f"missing {fake}/ipxe.efi" in result.stderr
    assert "install-deps" in result.stderr
    assert not (tmp_path / "tftp").exists()
