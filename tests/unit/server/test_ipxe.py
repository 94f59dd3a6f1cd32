"""The per-machine iPXE script: what it says for each decision, and the whole chain run on the iPXE
model (tests.support.ipxe) with every HTTP fetch going to ``peagent serve`` for real: the shipped
peagent.ipxe asks the DP with the machine's identity, and boots the PE with its task, waits for
approval, or leaves iPXE so the firmware boots the next device."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from peagent.cmdline import parse_cmdline
from peagent.server.assign import Decision
from peagent.server.dp import DPServer
from peagent.server.ipxe import ScriptError, render, say
from tests.support import ipxe
from tests.support.dp import embedded_dp

NETBOOT = Path(__file__).resolve().parents[3] / "netboot" / "ipxe"
STATIC = "#!ipxe\necho static boot script\nkernel ${peagent-dp}/pe/vmlinuz || goto failed\n"
TFTP = "tftp://10.77.0.2/peagent.ipxe"
ADMIN = "admin-0123456789abcdef"
MAC = "52:54:00:12:34:56"


def test_deploy_sets_the_task_and_runs_the_dps_own_script() -> None:
    script = render(Decision("deploy", "rule lab", rule="lab", task="tasks/lab.json"),
                    task_url="http://dp:8080/api/v1/tasks/lab-1", again_url="http://dp:8080/boot.ipxe?mac=x",
                    static=STATIC, deployment_id="lab-1")
    lines = script.splitlines()
    assert lines[0] == "#!ipxe" and lines.count("#!ipxe") == 1
    assert "set peagent-task http://dp:8080/api/v1/tasks/lab-1" in lines
    assert lines[-2:] == ["echo static boot script", "kernel ${peagent-dp}/pe/vmlinuz || goto failed"]
    no_static = render(Decision("deploy", "rule lab"), task_url="http://dp/api/v1/tasks/lab-1",
                       again_url="http://dp/boot.ipxe?mac=x", static=None)
    assert "no boot.ipxe" in no_static and no_static.rstrip().endswith("exit 1")


@pytest.mark.parametrize("kind", ["pending", "postponed"])
def test_waiting_sleeps_and_asks_again_at_the_same_url(kind: str) -> None:
    again = "http://dp/boot.ipxe?mac=52%3A54%3A00%3A12%3A34%3A56&model=T14"
    script = render(Decision(kind, "waits for approval", retry_after=17), task_url=None, again_url=again,
                    static=STATIC)
    assert "sleep 17 ||" in script.splitlines()
    assert f"chain --replace --autofree {again} || goto wait" in script.splitlines()
    assert "exit" not in script


@pytest.mark.parametrize("kind", ["none", "refused", "cancelled"])
def test_nothing_to_do_says_why_and_exits_with_success(kind: str) -> None:
    script = render(Decision(kind, "no rule matches"), task_url=None, again_url="http://dp/boot.ipxe?mac=x",
                    static=STATIC)
    assert "echo peagent: no rule matches" in script and script.rstrip().endswith("exit 0")
    assert "kernel" not in script and "chain" not in script


def test_text_from_a_machine_cannot_become_a_command() -> None:
    assert say("model ${x} || shell && reboot\nkernel evil") == "model ??x? ?? shell ?? reboot?kernel evil"
    script = render(Decision("none", "model ${peagent-dp} || shell"), task_url=None,
                    again_url="http://dp/boot.ipxe?mac=x", static=None)
    assert "$" not in script and "||" not in script
    with pytest.raises(ScriptError):
        render(Decision("pending", "x", retry_after=5), task_url=None, again_url="http://dp/x y", static=None)


class Machine(ipxe.Machine):
    """The iPXE model fetching http URLs from a live server, with the commands the DP's scripts use
    beyond what the model has (``sleep``, ``exit``, ``${name:uristring}``)."""

    sleeps: list[int]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sleeps = []

    def _fetch(self, url: str, base: str) -> tuple[str, str | None]:
        if not url.startswith("http://"):
            return super()._fetch(url, base)
        self.fetched.append(url)
        r = requests.get(url, timeout=5)
        if r.status_code != 200:
            return url, None
        self.files[url] = r.text
        return url, r.text

    def _expand(self, line: str) -> str:
        for name, value in self.settings.items():
            line = line.replace("${" + name + ":uristring}", quote(value, safe=""))
        return super()._expand(line.replace(":uristring}", "}"))

    def _command(self, argv: list[str], url: str) -> tuple[int, str | None]:
        if argv and argv[0] == "sleep":
            self.sleeps.append(int(argv[1]))
            return 0, None
        if argv and argv[0] == "exit":
            raise _Exit(int(argv[1]) if len(argv) > 1 else 0)
        return super()._command(argv, url)

    def _chain(self, url: str) -> int:
        try:
            return super()._chain(url)
        except _Exit as done:  # exit ends the script it is in; the one that chained it goes on
            return done.status


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@pytest.fixture
def dp(tmp_path: Path) -> Iterator[DPServer]:
    root = tmp_path / "dp"
    (root / "tasks").mkdir(parents=True)
    (root / "pe").mkdir()
    (root / "pe" / "vmlinuz").write_text("kernel")
    (root / "pe" / "initrd.zst").write_text("initrd")
    shutil.copy(NETBOOT / "boot.ipxe", root / "boot.ipxe")
    (root / "tasks" / "lab.json").write_text(json.dumps({"version": 1, "id": "lab"}))
    (root / "tasks" / "dell.json").write_text(json.dumps({"version": 1, "id": "dell"}))
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({
        "unknown": "refuse", "retry_after": 7,
        "rules": [{"name": "lab", "match": {"mac": "52:54:00:*"}, "task": "tasks/lab.json", "once": True},
                  {"name": "dell", "match": {"vendor": "Dell*"}, "task": "tasks/dell.json", "approve": True}]}))
    with embedded_dp(root, config=config, admin_token=ADMIN) as server:
        yield server


def boot(server: DPServer, mac: str, max_lines: int = 400, **settings: str) -> tuple[Machine, int | None]:
    m = Machine({"platform": "efi", "mac": mac, "peagent-dp": server.url.rstrip("/"), **settings},
                {TFTP: (NETBOOT / "peagent.ipxe").read_text()}, max_lines=max_lines)
    return m, m.run(TFTP)


def test_a_machine_the_rules_give_a_task_boots_the_pe_with_it(dp: DPServer) -> None:
    m, _ = boot(dp, MAC, uuid="4C4C4544-0042-3510-8052-B2C04F4D3732", product="ThinkPad T14")
    assert m.booted is not None, m.echoes
    kernel, cmdline, initrds = m.booted
    base = dp.url.rstrip("/")
    assert kernel == f"{base}/pe/vmlinuz" and initrds == [(f"{base}/pe/initrd.zst", "initrd.zst")]
    params = parse_cmdline(cmdline)
    assert params.dps == (base,)
    assert params.task.startswith(f"{base}/api/v1/tasks/lab-")
    task = requests.get(params.task, timeout=5).json()  # what the PE then fetches
    assert task["status"]["url"] == f"{base}/api/v1/events" and len(task["status"]["token"]) >= 16
    machine = requests.get(f"{base}/api/v1/machines/4c4c4544-0042-3510-8052-b2c04f4d3732", timeout=5).json()
    assert machine["machine"]["model"] == "ThinkPad T14"
    events = requests.get(f"{base}/api/v1/deployments/{task['id']}/events", timeout=5).json()["events"]
    assert [(e["source"], e["phase"]) for e in events] == [("server", "pxe"), ("server", "task")]


def test_a_machine_waiting_for_approval_asks_again_and_boots_once_approved(dp: DPServer) -> None:
    dell = "aa:bb:cc:00:00:01"
    m, status = boot(dp, dell, max_lines=60, manufacturer="Dell Inc.")
    assert status is None and m.booted is None  # still waiting when the model stopped it
    assert any("waits for an administrator's approval" in e for e in m.echoes)
    assert m.sleeps[:2] == [7, 7]
    asks = [parse_qs(urlsplit(u).query) for u in m.fetched if "/boot.ipxe?" in u]
    assert len(asks) >= 3
    assert all(a == {"mac": [dell], "vendor": ["Dell Inc."]} for a in asks)  # the same machine every time
    r = requests.post(f"{dp.url}api/v1/machines/{dell}/approve", headers={"Authorization": f"Bearer {ADMIN}"},
                      timeout=5)
    assert r.status_code == 200
    m, _ = boot(dp, dell, manufacturer="Dell Inc.")
    assert m.booted is not None and "/api/v1/tasks/dell-" in m.booted[1]


@pytest.mark.parametrize("case", ["refused", "once-done", "cancelled"])
def test_nothing_to_do_leaves_ipxe_for_the_next_boot_device(dp: DPServer, case: str) -> None:
    mac = MAC
    if case == "refused":
        mac = "aa:bb:cc:00:00:77"  # no rule, and unknown machines are refused
    elif case == "once-done":
        task = requests.get(f"{dp.url}api/v1/task", params={"mac": MAC}, timeout=5).json()
        r = requests.post(task["status"]["url"], headers={"Authorization": f"Bearer {task['status']['token']}"},
                          json={"schema": 1, "id": "event-done-0001", "deployment_id": task["id"], "seq": 1,
                                "source": "pe", "time": 1.0, "phase": "done", "message": "done"}, timeout=5)
        assert r.status_code == 200
    else:
        requests.get(f"{dp.url}api/v1/task", params={"mac": MAC}, timeout=5)
        r = requests.post(f"{dp.url}api/v1/machines/{MAC}/cancel", headers={"Authorization": f"Bearer {ADMIN}"},
                          timeout=5)
        assert r.status_code == 200
    m, status = boot(dp, mac)
    assert status == 0 and m.booted is None and m.shells == 0
    assert any("leaving iPXE" in e for e in m.echoes)
    assert not any("could not" in e for e in m.echoes)


def test_without_assignments_a_machine_with_no_task_file_still_boots_the_pe(tmp_path: Path) -> None:
    # As from a static DP: the PE boots without a task, and decides for itself (a command, a shell).
    root = tmp_path / "dp"
    (root / "pe").mkdir(parents=True)
    (root / "pe" / "vmlinuz").write_text("kernel")
    (root / "pe" / "initrd.zst").write_text("initrd")
    shutil.copy(NETBOOT / "boot.ipxe", root / "boot.ipxe")
    with embedded_dp(root) as server:
        m, _ = boot(server, MAC)
        assert m.booted is not None
        assert parse_cmdline(m.booted[1]).task is None
        (root / "tasks").mkdir()
        (root / "tasks" / "52-54-00-12-34-56.json").write_text(json.dumps({"version": 1, "id": "ws42"}))
        m, _ = boot(server, MAC)
        assert m.booted is not None and "/api/v1/tasks/ws42-" in parse_cmdline(m.booted[1]).task


def test_a_malformed_query_is_a_400_script(dp: DPServer) -> None:
    r = requests.get(f"{dp.url}boot.ipxe", params={"mac": "nonsense"}, timeout=5)
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("text/plain")
    assert r.text.startswith("#!ipxe\n") and "refused the request: parameter mac" in r.text
    static = requests.get(f"{dp.url}boot.ipxe", timeout=5)  # without a query: the file
    assert static.status_code == 200 and static.text == (NETBOOT / "boot.ipxe").read_text()
