"""Placing a machine's state into a Linux tree: every file, its mode, and the first-boot program run for real."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from peagent.state import firstboot_linux as fb
from peagent.state.linux_target import LinuxImage, describe_linux, hosts_text, place_linux
from peagent.state.model import HostKey, Interface, MachineState, Secret
from peagent.state.netconfig_linux import LinuxStateError
from peagent.status import validate_event

HASH = "$6$saltsalt$Ey0bP2Ei0kq1pJ8QH9ZUCq7P9nmn1a1oXG5n8A7Gx6Q1eXY3bHkmJr2t3pZ0x9nT4gk2Yq7H8pA5e6.9Tq3b1"
PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAsecretkeymaterial\n-----END OPENSSH PRIVATE KEY-----"
TOKEN = "tok-'quoted'-s3cret"
STATIC = Interface(mac="52:54:00:12:34:56", dhcp=False, addresses=("192.168.10.50/24",), gateway="192.168.10.1",
                   dns=("192.168.10.2",), search=("corp.example.com",), name="ens3")
STATE = MachineState(computer_name="ws0042", dns_domain="corp.example.com", timezone="W. Europe Standard Time",
                     interfaces=(STATIC,), root_password_hash=Secret(HASH),
                     ssh_authorized_keys=("ssh-ed25519 AAAAC3Nza admin@example",),
                     ssh_host_keys=(HostKey("ed25519", Secret(PRIVATE), "ssh-ed25519 AAAAC3NzaPUB root@old"),))
ENV = {"STATUS_URL": "http://dp.example:8080/status", "DEPLOYMENT_ID": "d-1", "TOKEN": TOKEN}


def write(root: Path, rel: str, data: str = "") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture()
def demo(tmp_path: Path) -> Path:
    """A tree shaped like the demo OS: Debian, merged /usr, systemd-networkd, sshd, no cloud-init."""
    root = tmp_path / "new"
    for d in ("bin", "sbin", "lib"):
        (root / "usr" / d).mkdir(parents=True, exist_ok=True)
        os.symlink(f"usr/{d}", root / d)
    write(root, "usr/lib/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    (root / "etc").mkdir()
    os.symlink("../usr/lib/os-release", root / "etc/os-release")
    write(root, "usr/lib/systemd/systemd")
    write(root, "usr/sbin/sshd")
    write(root, "usr/share/zoneinfo/Europe/Berlin")
    (root / "lib/modules/6.1.0-56-amd64").mkdir(parents=True)
    write(root, "etc/systemd/network/80-demo-os-dhcp.network", "[Match]\nType=ether\n[Network]\nDHCP=yes\n")
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    os.symlink("/usr/lib/systemd/system/systemd-networkd.service",
               root / "etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
    write(root, "etc/hostname", "demo-os\n")
    write(root, "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tdemo-os\n\n# IPv6\n::1\tlocalhost ip6-localhost\n")
    write(root, "etc/machine-id")
    (root / "var/lib/dbus").mkdir(parents=True)
    os.symlink("/etc/machine-id", root / "var/lib/dbus/machine-id")
    write(root, "etc/ssh/ssh_host_ecdsa_key", "golden image key")
    write(root, "etc/ssh/ssh_host_ecdsa_key.pub", "ecdsa golden")
    write(root, "etc/ssh/sshd_config", "# kept\n")
    os.chmod(write(root, "etc/shadow", "root:*:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n"), 0o640)
    write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    write(root, "var/lib/dhcp/dhclient.ens3.leases", "lease {}")
    write(root, "etc/udev/rules.d/70-persistent-net.rules", "SUBSYSTEM==...")
    write(root, "etc/NetworkManager/system-connections/Wired connection 1.nmconnection", "[connection]\n")
    write(root, "var/lib/NetworkManager/internal-0f5b.lease", "ADDRESS=10.0.0.9")
    write(root, "var/lib/NetworkManager/NetworkManager.state", "[main]\n")
    return root


def test_describe_demo(demo: Path) -> None:
    assert describe_linux(demo) == LinuxImage(name="Debian GNU/Linux 12 (bookworm)", has_cloud_init=False,
                                              network_stack="networkd", has_systemd=True, has_ssh_server=True,
                                              kernels=("6.1.0-56-amd64",))


@pytest.mark.parametrize(("files", "stack"), [
    (["etc/netplan/"], "netplan"), (["usr/sbin/netplan"], "netplan"),
    (["usr/sbin/NetworkManager"], "networkmanager"), (["etc/systemd/network/x.network"], "networkd"),
    (["sbin/ifup"], "ifupdown"), ([], None)])
def test_describe_stack(tmp_path: Path, files: list[str], stack: str | None) -> None:
    for f in files:
        (tmp_path / f).mkdir(parents=True) if f.endswith("/") else write(tmp_path, f)
    assert describe_linux(tmp_path).network_stack == stack


def test_describe_cloud_init(tmp_path: Path) -> None:
    write(tmp_path, "usr/bin/cloud-init")
    assert describe_linux(tmp_path).has_cloud_init
    write(tmp_path, "etc/cloud/cloud-init.disabled")
    assert not describe_linux(tmp_path).has_cloud_init


def test_place_into_demo(demo: Path) -> None:
    image = describe_linux(demo)
    report = place_linux(demo, image, STATE, deployment_id="d-1", record=b'{"deployment_id": "d-1"}\n',
                         firstboot_env=ENV)
    assert (demo / "etc/hostname").read_text() == "ws0042\n"
    assert (demo / "etc/hosts").read_text() == ("127.0.0.1\tlocalhost\n127.0.1.1\tws0042.corp.example.com ws0042\n"
                                                "\n# IPv6\n::1\tlocalhost ip6-localhost\n")
    assert (demo / "etc/machine-id").read_bytes() == b"uninitialized\n"
    assert os.readlink(demo / "var/lib/dbus/machine-id") == "/etc/machine-id"  # a link to it stays
    assert sorted(os.listdir(demo / "etc/ssh")) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub",
                                                    "sshd_config"]
    assert (demo / "etc/ssh/ssh_host_ed25519_key").read_text() == PRIVATE + "\n"
    assert mode(demo / "etc/ssh/ssh_host_ed25519_key") == 0o600
    assert mode(demo / "etc/ssh/ssh_host_ed25519_key.pub") == 0o644
    assert os.readlink(demo / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    assert (demo / "etc/timezone").read_text() == "Europe/Berlin\n"
    assert (demo / "etc/shadow").read_text() == f"root:{HASH}:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n"
    assert mode(demo / "etc/shadow") == 0o640
    assert (demo / "root/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAAC3Nza admin@example\n"
    assert (mode(demo / "root/.ssh"), mode(demo / "root/.ssh/authorized_keys")) == (0o700, 0o600)
    assert (demo / "etc/systemd/network/10-peagent-525400123456.network").read_text() == (
        "[Match]\nMACAddress=52:54:00:12:34:56\n\n[Network]\nAddress=192.168.10.50/24\nGateway=192.168.10.1\n"
        "DNS=192.168.10.2\nDomains=corp.example.com\n")
    assert (demo / "etc/systemd/network/80-demo-os-dhcp.network").exists()  # the image's fallback stays
    assert not (demo / "var/lib/dhcp/dhclient.ens3.leases").exists()
    assert not (demo / "etc/udev/rules.d/70-persistent-net.rules").exists()
    assert os.listdir(demo / "etc/NetworkManager/system-connections") == []
    assert os.listdir(demo / "var/lib/NetworkManager") == ["NetworkManager.state"]
    assert (demo / "var/lib/peagent/deployment.json").read_bytes() == b'{"deployment_id": "d-1"}\n'
    assert mode(demo / "var/lib/peagent/deployment.json") == 0o644
    env = demo / "var/lib/peagent/firstboot.env"
    assert mode(env) == 0o600
    assert env.read_text() == ("STATUS_URL='http://dp.example:8080/status'\nDEPLOYMENT_ID='d-1'\n"
                               "TOKEN='tok-'\\''quoted'\\''-s3cret'\n")
    sourced = subprocess.run(["sh", "-c", f'. "{env}"; printf %s "$TOKEN"'], capture_output=True, text=True)
    assert sourced.stdout == TOKEN
    script = demo / "usr/local/lib/peagent/firstboot"
    assert mode(script) == 0o755 and script.read_text() == fb.SCRIPT
    unit = (demo / "etc/systemd/system/peagent-firstboot.service").read_text()
    for line in ("Type=oneshot", "Wants=network-online.target", "ConditionPathExists=/var/lib/peagent/firstboot.env",
                 "ExecStart=/usr/local/lib/peagent/firstboot", "WantedBy=multi-user.target"):
        assert line in unit.splitlines()
    assert "After=network-online.target peagent-ssh-keygen.service" in unit
    wants = demo / "etc/systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "peagent-firstboot.service") == "/etc/systemd/system/peagent-firstboot.service"
    assert os.readlink(wants / "peagent-ssh-keygen.service") == "/etc/systemd/system/peagent-ssh-keygen.service"
    assert "Before=ssh.service sshd.service" in (demo / "etc/systemd/system/peagent-ssh-keygen.service").read_text()
    text = "\n".join(report)
    for secret in (HASH, TOKEN, "s3cret", "secretkeymaterial"):
        assert secret not in text
    assert report == [
        "removed the image's machine-bound state: etc/udev/rules.d/70-persistent-net.rules, "
        "var/lib/dhcp/dhclient.ens3.leases, var/lib/NetworkManager/internal-0f5b.lease, "
        "etc/NetworkManager/system-connections/Wired connection 1.nmconnection",
        "hostname: ws0042.corp.example.com (etc/hostname, etc/hosts)",
        "machine-id: uninitialized (systemd makes one at the first boot)",
        "SSH host keys: ed25519 written",
        "timezone: Europe/Berlin",
        "root password: set in etc/shadow",
        "root's SSH keys: 1 added to root/.ssh/authorized_keys",
        "network (networkd): etc/systemd/network/10-peagent-525400123456.network",
        "deployment record: var/lib/peagent/deployment.json",
        "first boot: peagent-firstboot.service, peagent-ssh-keygen.service run /usr/local/lib/peagent/firstboot; "
        "var/lib/peagent/firstboot.env holds STATUS_URL, DEPLOYMENT_ID, TOKEN",
    ]


def test_no_keys_in_state_removes_the_images(demo: Path) -> None:
    write(demo, "var/lib/dbus/machine-id.real", "")
    (demo / "var/lib/dbus/machine-id").unlink()
    write(demo, "var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n")  # a copy: removed
    report = place_linux(demo, describe_linux(demo), MachineState(), deployment_id="d", record=b"{}",
                         firstboot_env={})
    assert sorted(os.listdir(demo / "etc/ssh")) == ["sshd_config"]
    assert not os.path.lexists(demo / "var/lib/dbus/machine-id")
    assert (demo / "etc/hostname").read_text() == "demo-os\n"  # no name in the state: the image's
    assert "SSH host keys: the image's removed; new ones are made at the first boot" in report
    assert "network: the image's own configuration (no interfaces in the state)" in report


def test_hosts_text() -> None:
    assert hosts_text(None, "a", None) == "127.0.0.1\tlocalhost\n127.0.1.1\ta\n"
    assert hosts_text("10.0.0.1 gw\n", "a", "a.b") == "10.0.0.1 gw\n127.0.1.1\ta.b a\n"
    assert hosts_text("127.0.1.1 x\n127.0.1.1 y # dup\n", "a", None) == "127.0.1.1\ta\n"


def test_refusals_come_before_any_write(demo: Path) -> None:
    before = {p: p.read_bytes() for p in demo.rglob("*") if p.is_file() and not p.is_symlink()}
    bad = [MachineState(timezone="Mars/Olympus"), MachineState(computer_name="bad_name"),
           MachineState(root_password_hash=Secret("a:b"))]
    for state in bad:
        with pytest.raises(LinuxStateError) as exc:
            place_linux(demo, describe_linux(demo), state, deployment_id="d", record=b"{}", firstboot_env={})
        assert isinstance(exc.value, ValueError)
    assert "a:b" not in str(exc.value)
    nostack = LinuxImage("Tiny", False, None, True, False, ())
    with pytest.raises(ValueError, match="network stack peagent can configure"):
        place_linux(demo, nostack, MachineState(interfaces=(STATIC,)), deployment_id="d", record=b"{}",
                    firstboot_env={})
    with pytest.raises(ValueError, match="ifupdown matches by name"):
        place_linux(demo, LinuxImage("I", False, "ifupdown", True, False, ()),
                    MachineState(interfaces=(Interface(mac="52:54:00:00:00:01"),)), deployment_id="d",
                    record=b"{}", firstboot_env={})
    after = {p: p.read_bytes() for p in demo.rglob("*") if p.is_file() and not p.is_symlink()}
    assert after == before


def test_ifupdown_image_gets_its_source_line(tmp_path: Path) -> None:
    write(tmp_path, "etc/network/interfaces", "auto lo\niface lo inet loopback\n")
    image = LinuxImage("Old Debian", False, "ifupdown", False, False, ())
    report = place_linux(tmp_path, image, MachineState(interfaces=(STATIC,)), deployment_id="d", record=b"{}",
                         firstboot_env={})
    assert (tmp_path / "etc/network/interfaces").read_text() == (
        "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n")
    assert (tmp_path / "etc/network/interfaces.d/peagent").read_text().startswith("allow-hotplug ens3\n")
    assert not (tmp_path / "etc/machine-id").exists()
    assert report[-1] == "first boot report: not installed (the image has no systemd)"


def test_cloud_init_seed(demo: Path) -> None:
    write(demo, "usr/bin/cloud-init")
    write(demo, "etc/cloud/cloud.cfg", "datasource_list: [Ec2, None]\nusers: [default]\n")
    write(demo, "var/lib/cloud/instances/i-golden/sem/config_ssh")
    os.symlink("/var/lib/cloud/instances/i-golden", demo / "var/lib/cloud/instance")
    write(demo, "var/lib/cloud/data/instance-id", "i-golden\n")
    write(demo, "var/lib/cloud/seed/nocloud/vendor-data", "stale")
    image = describe_linux(demo)
    report = place_linux(demo, image, STATE, deployment_id="d-1", record=b"{}", firstboot_env=ENV)
    assert sorted(os.listdir(demo / "var/lib/cloud")) == ["seed"]
    seed = demo / "var/lib/cloud/seed/nocloud"
    assert sorted(os.listdir(seed)) == ["meta-data", "network-config", "user-data"]
    assert all(mode(p) == 0o600 for p in seed.iterdir())
    assert yaml.safe_load((seed / "meta-data").read_text()) == {"instance-id": "peagent-d-1",
                                                                "local-hostname": "ws0042"}
    user = (seed / "user-data").read_text()
    assert user.startswith("#cloud-config\n")
    assert yaml.safe_load(user) == {"preserve_hostname": False, "hostname": "ws0042",
                                    "fqdn": "ws0042.corp.example.com", "timezone": "Europe/Berlin",
                                    "disable_root": False, "ssh_authorized_keys": ["ssh-ed25519 AAAAC3Nza admin@example"],
                                    "ssh_deletekeys": False}
    assert yaml.safe_load((seed / "network-config").read_text()) == {"version": 2, "ethernets": {"nic0": {
        "match": {"macaddress": "52:54:00:12:34:56"}, "set-name": "ens3", "dhcp4": False,
        "addresses": ["192.168.10.50/24"], "routes": [{"to": "default", "via": "192.168.10.1"}],
        "nameservers": {"addresses": ["192.168.10.2"], "search": ["corp.example.com"]}}}}
    assert not (demo / "etc/systemd/network/10-peagent-525400123456.network").exists()  # cloud-init renders it
    cfg = yaml.safe_load((demo / "etc/cloud/cloud.cfg.d/99zz-peagent-nocloud.cfg").read_text())
    assert cfg == {"datasource_list": ["NoCloud", "Ec2", "None"]}
    assert HASH not in "\n".join(report) and PRIVATE not in user


def test_cloud_init_with_network_disabled_uses_the_stack(demo: Path) -> None:
    write(demo, "usr/bin/cloud-init")
    write(demo, "etc/cloud/cloud.cfg.d/99-disable-network-config.cfg", "network: {config: disabled}\n")
    place_linux(demo, describe_linux(demo), STATE, deployment_id="d-2", record=b"{}", firstboot_env={})
    assert not (demo / "var/lib/cloud/seed/nocloud/network-config").exists()
    assert (demo / "var/lib/cloud/seed/nocloud/user-data").exists()
    assert (demo / "etc/systemd/network/10-peagent-525400123456.network").exists()


def test_firstboot_script_parses() -> None:
    for shell in ("sh", "bash"):
        result = subprocess.run([shell, "-n", "-c", fb.SCRIPT], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


# The first-boot program, run for real ------------------------------------------------------------------------------

TOOLS = ("sh", "bash", "cat", "rm", "date", "sleep", "tr", "sed", "cut", "tail", "grep", "uname", "timeout",
         "ssh-keygen")


@pytest.fixture()
def sandbox_path(tmp_path: Path) -> str:
    """A PATH with the basics and ssh-keygen, but no curl, wget, python3 or ip: bash's /dev/tcp must post."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        os.symlink(found, bindir / tool)
    return str(bindir)


@pytest.fixture()
def status_server() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/status", got
    server.shutdown()
    server.server_close()


def run_firstboot(root: Path, path: str, console: Path, *args: str, wait: int = 10) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "PEAGENT_FIRSTBOOT_ROOT": str(root), "PEAGENT_FIRSTBOOT_CONSOLES": str(console),
           "PEAGENT_FIRSTBOOT_WAIT": str(wait)}
    return subprocess.run(["sh", str(root / fb.SCRIPT_PATH), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def placed(tmp_path: Path, env: dict[str, str]) -> Path:
    root = tmp_path / "booted"
    write(root, "usr/lib/systemd/systemd")
    os.chmod(write(root, "usr/sbin/sshd"), 0o755)
    write(root, "etc/ssh/sshd_config")
    place_linux(root, describe_linux(root), MachineState(computer_name="ws0042"), deployment_id="d-7",
                record=b"{}", firstboot_env=env)
    write(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n")  # as systemd commits it
    return root


def test_firstboot_posts_with_bash_dev_tcp(tmp_path: Path, sandbox_path: str, status_server) -> None:
    url, got = status_server
    root = placed(tmp_path, {"STATUS_URL": url, "DEPLOYMENT_ID": "d-7", "TOKEN": TOKEN})
    console = tmp_path / "console"
    keys = run_firstboot(root, sandbox_path, console, "keys")  # peagent-ssh-keygen.service: sshd, no keys
    assert keys.returncode == 0, keys.stderr
    assert (root / "etc/ssh/ssh_host_ed25519_key").exists()
    result = run_firstboot(root, sandbox_path, console)
    assert result.returncode == 0, result.stderr
    assert len(got) == 1
    headers, body = got[0]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    event = json.loads(body)
    assert validate_event(event) == event  # schema 1, every field present
    assert (event["id"], event["deployment_id"], event["seq"], event["source"]) == ("d-7:complete", "d-7", 1,
                                                                                    "firstboot")
    assert (event["phase"], event["message"], event["level"], event["warnings"]) == (
        "complete", "first boot complete", "info", [])
    assert event["machine"]["hostname"] == os.uname().nodename
    assert set(event["machine"]) == {"hostname", "macs", "uuid", "serial", "vendor", "model"}
    assert isinstance(event["machine"]["macs"], list) and isinstance(event["time"], int)
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(root / "etc/ssh/ssh_host_ed25519_key.pub")],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    assert event["data"] == {"machine_id": "0123456789abcdef0123456789abcdef", "ssh": fingerprint,
                             "addresses": "none", "commands": "none"}
    line = (f"peagent-firstboot: complete deployment=d-7 hostname={os.uname().nodename} "
            f"machine-id=0123456789abcdef0123456789abcdef ssh={fingerprint} addresses=none commands=none status=posted")
    assert result.stdout.splitlines()[-1] == line
    assert console.read_bytes() == f"\r\n{line}\r\n".encode()
    assert not (root / fb.ENV_PATH).exists()
    assert not os.path.lexists(root / fb.WANTS / fb.UNIT) and not os.path.lexists(root / fb.WANTS / fb.KEYGEN_UNIT)
    assert TOKEN not in result.stdout + result.stderr


def test_the_tasks_first_boot_commands_run_once_and_are_reported(tmp_path: Path, sandbox_path: str) -> None:
    root = tmp_path / "booted"
    write(root, "usr/lib/systemd/systemd")
    state = MachineState(first_boot_commands=('echo one >> "$PEAGENT_FIRSTBOOT_ROOT/ran"', "false", "echo never"))
    report = place_linux(root, describe_linux(root), state, deployment_id="d-8", record=b"{}",
                         firstboot_env={"DEPLOYMENT_ID": "d-8"})
    assert any("3 first-boot command(s)" in line for line in report)
    assert (root / fb.COMMANDS_PATH).stat().st_mode & 0o777 == 0o600
    result = run_firstboot(root, sandbox_path, tmp_path / "console")
    assert result.returncode == 0, result.stderr
    assert (root / "ran").read_text() == "one\n"  # set -e: the failing command stops the rest
    assert "commands=failed:1 status=no status url" in result.stdout
    assert not (root / fb.COMMANDS_PATH).exists()


def test_failed_first_boot_commands_make_the_report_a_warning(tmp_path: Path, sandbox_path: str,
                                                              status_server) -> None:
    url, got = status_server
    root = tmp_path / "booted"
    write(root, "usr/lib/systemd/systemd")
    place_linux(root, describe_linux(root), MachineState(first_boot_commands=("exit 3",)), deployment_id="d-11",
                record=b"{}", firstboot_env={"STATUS_URL": url, "DEPLOYMENT_ID": "d-11"})
    result = run_firstboot(root, sandbox_path, tmp_path / "console")
    assert "commands=failed:3 status=posted" in result.stdout
    event = json.loads(got[0][1])
    assert validate_event(event) == event
    assert (event["level"], event["warnings"]) == ("warning", ["the task's first-boot commands failed (exit status 3)"])
    assert event["data"]["machine_id"] == "uninitialized" and event["data"]["commands"] == "failed:3"  # as placed
    assert "Authorization" not in got[0][0]  # no token given


@pytest.mark.parametrize("tool", ["curl", "wget", "python3"])
def test_firstboot_posts_with_the_first_tool_there(tmp_path: Path, sandbox_path: str, status_server, tool: str) -> None:
    # python3 may be a pyenv shim here, which needs more than the sandbox has: the interpreter itself.
    found = os.path.realpath(sys.executable) if tool == "python3" else shutil.which(tool)
    if found is None:
        pytest.skip(f"no {tool} on this machine")
    os.symlink(found, Path(sandbox_path) / tool)
    url, got = status_server
    root = placed(tmp_path, {"STATUS_URL": url, "DEPLOYMENT_ID": "d-10", "TOKEN": TOKEN})
    result = run_firstboot(root, sandbox_path, tmp_path / "console")
    assert result.stdout.splitlines()[-1].endswith("status=posted"), result.stdout + result.stderr
    assert [(h["Authorization"], json.loads(b)["deployment_id"]) for h, b in got] == [(f"Bearer {TOKEN}", "d-10")]
    validate_event(json.loads(got[0][1]))


def test_firstboot_gives_up_after_its_retries(tmp_path: Path, sandbox_path: str) -> None:
    root = placed(tmp_path, {"STATUS_URL": "http://127.0.0.1:9/status", "DEPLOYMENT_ID": "d-8"})
    console = tmp_path / "console"
    result = run_firstboot(root, sandbox_path, console, wait=2)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].endswith("status=not posted: bash: cannot connect to 127.0.0.1:9")
    assert not (root / fb.ENV_PATH).exists()  # once, even so: noted on the console
    https = placed(tmp_path / "2", {"STATUS_URL": "https://dp.example/status"})
    out = run_firstboot(https, sandbox_path, console, wait=30).stdout
    assert "status=not posted: bash: only curl, wget or python3 can post to https://" in out


def test_firstboot_without_status_url(tmp_path: Path, sandbox_path: str) -> None:
    root = placed(tmp_path, {"DEPLOYMENT_ID": "d-9"})
    result = run_firstboot(root, sandbox_path, tmp_path / "console")
    assert result.stdout.endswith("status=no status url\n")
    assert run_firstboot(root, sandbox_path, tmp_path / "console").stdout.startswith("peagent-firstboot: nothing")
