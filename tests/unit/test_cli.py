from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from peagent.cli import build_parser, main
from peagent.inventory import Disk, Inventory

INV = Inventory(disks=(Disk(name="vda", path="/dev/vda", size=10 << 30, transport="virtio", serial="S1"),))


def write(tmp_path: Path, name: str, doc: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_help_lists_only_working_commands() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert sorted(commands) == ["apply", "deploy", "drivers", "image", "inventory", "keys", "plan", "serve", "state",
                                "wim", "write"]


def test_plan_from_a_captured_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write(tmp_path, "inv.json", INV.to_dict())
    task = write(tmp_path, "t.json", {"version": 1, "id": "p1", "after": "none",
                                      "image": {"url": "img.raw", "sha256": "d" * 64}})
    assert main(["plan", task, "--inventory", inv, "--dp", "http://dp/"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deployment p1\ntarget: /dev/vda (10.7 GB virtio, unknown model, serial S1)\n")
    assert "  5. stay up\n" in out
    assert main(["plan", task, "--inventory", inv, "--dp", "http://dp/", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["image"]["sources"] == ["http://dp/img.raw"]


def test_errors_map_to_exit_statuses_with_their_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    inv = write(tmp_path, "inv.json", INV.to_dict())
    bad = write(tmp_path, "bad.json", {"version": 1, "image": {"url": "x", "sha256": "d" * 64}, "after": "halt"})
    assert main(["plan", bad, "--inventory", inv]) == 2
    assert "error [task.invalid]: after: expected one of reboot, poweroff, kexec, none, found \"halt\"" in caplog.text
    two = Inventory(disks=(*INV.disks, Disk(name="vdb", path="/dev/vdb", size=1 << 30)))
    inv2 = write(tmp_path, "inv2.json", two.to_dict())
    ok = write(tmp_path, "ok.json", {"version": 1, "image": {"url": "x", "sha256": "d" * 64}})
    assert main(["plan", ok, "--inventory", inv2, "--dp", "http://dp/"]) == 3
    assert "error [target.refused]: 2 disks are eligible" in caplog.text
    assert main(["plan", ok, "--inventory", str(tmp_path / "missing.json")]) == 2
    assert "cannot read the inventory" in caplog.text


def test_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    public = (tmp_path / "peagent.pub").read_text().strip()
    assert out.startswith("key ") and out.rstrip().endswith(public)
    assert main(["keys", "-o", str(tmp_path)]) == 2  # never overwrites a private key


def test_keys_build_inspect_verify_write_a_signed_image(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = os.urandom(300_000) + bytes(500_000) + b"end" * 1000
    (tmp_path / "disk.raw").write_bytes(data)
    assert main(["keys", "-o", str(tmp_path / "k")]) == 0
    pub = str(tmp_path / "k" / "peagent.pub")
    image = str(tmp_path / "img")
    assert main(["image", "build", str(tmp_path / "disk.raw"), "-o", image, "--name", "t", "--version", "1",
                 "--key", str(tmp_path / "k" / "peagent.key"), "--frame-size", "65536"]) == 0
    capsys.readouterr()
    assert main(["image", "inspect", image, "--key", pub, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == len(data)
    assert main(["image", "verify", image, "--key", pub]) == 0
    assert main(["write", image, str(tmp_path / "out.raw"), "--key", pub]) == 0
    assert (tmp_path / "out.raw").read_bytes() == data
    assert main(["write", image, str(tmp_path / "out2.raw")]) == 6  # no trusted key, no pin
    assert "error [image.signature]: the manifest is signed by key" in caplog.text


def test_write_a_third_party_file(tmp_path: Path) -> None:
    data = os.urandom(100_000) * 3
    (tmp_path / "x.img").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert main(["write", str(tmp_path / "x.img"), str(tmp_path / "out"), "--sha256", digest, "--bmap", "none"]) == 0
    assert (tmp_path / "out").read_bytes() == data
    assert main(["write", str(tmp_path / "x.img"), str(tmp_path / "out"), "--sha256", "0" * 64,
                 "--bmap", "none"]) == 5
    assert main(["write", str(tmp_path / "x.img"), str(tmp_path / "out"), "--sha256", "xyz"]) == 2
    assert main(["write", str(tmp_path / "x.img"), str(tmp_path / "out"), "--sha256", digest,
                 "--limit-rate", "fast"]) == 2


def test_state_capture_shows_what_a_deploy_would_keep_without_secrets(tmp_path: Path, capsys) -> None:
    from tests.support.hive import PRODUCT_KEY, software_tree, system_tree, windows_tree

    windows_tree(tmp_path, system=system_tree(), software=software_tree())
    assert main(["state", "capture", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert doc["os"] == "windows" and doc["state"]["computer_name"] == "WS-0042"
    assert doc["state"]["product_key"] == "<secret>" and PRODUCT_KEY not in out


def test_drivers_index_writes_a_signed_index(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             caplog: pytest.LogCaptureFixture) -> None:
    from peagent.drivers.store import load_index
    from peagent.image.sign import PublicKey
    from tests.unit.drivers.test_store import VIOSTOR_INF

    store = tmp_path / "store"
    (store / "windows/_generic/_generic/_generic/amd64/viostor").mkdir(parents=True)
    (store / "windows/_generic/_generic/_generic/amd64/viostor/viostor.inf").write_text(VIOSTOR_INF)
    (store / "windows/_generic/_generic/_generic/amd64/bad").mkdir()
    (store / "windows/_generic/_generic/_generic/amd64/bad/bad.inf").write_text("not an INF\n")
    assert main(["keys", "-o", str(tmp_path / "keys")]) == 0
    capsys.readouterr()
    assert main(["drivers", "index", str(store), "-o", str(tmp_path / "out"),
                 "--key", str(tmp_path / "keys/peagent.key")]) == 0
    data = (tmp_path / "out/index.json").read_bytes()
    out = capsys.readouterr().out
    assert out.startswith("1 packages (1 INFs, 0 modules), 2 warnings, in ")
    assert out.rstrip().endswith(f"{tmp_path / 'out/index.json'} (signed sha256 {hashlib.sha256(data).hexdigest()})")
    assert "warning: windows/_generic/_generic/_generic/amd64/bad/bad.inf: expected an INF file" in caplog.text
    public = PublicKey.from_text((tmp_path / "keys/peagent.pub").read_text(), "peagent.pub")
    index = load_index(data, (tmp_path / "out/index.json.sig").read_text(), [public])
    assert [p.id for p in index.packages] == ["windows/_generic/_generic/_generic/amd64/viostor"]
    assert main(["drivers", "index", str(tmp_path / "nowhere")]) == 2
