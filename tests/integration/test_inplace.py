"""In-place re-imaging on a real ext4 partition (a loop device), through `peagent.deploy`.

An "old OS" with user data is laid out on partition 2 of a GPT disk; the new OS is a base file
image and three application layers on the embedded DP; the task picks two of them. Each test
deploys and then reads the partition back: the old OS gone, the new one (base + the two layers)
there exactly, the user's files byte-identical with their metadata, fstab pointing at this
partition. The refusals (no room, an unknown OS, a layer without its base) leave the partition
exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from peagent import deploy as deploy_module
from peagent.cli import main
from peagent.deploy import DeployOptions, deploy
from peagent.errors import ImageError, InplaceError, NoSpaceError, UnknownOSError
from peagent.inventory import Inventory, Nic
from peagent.status import Reporter
from tests.support.blockdev import inspect, mounted
from tests.support.dp import embedded_dp

pytestmark = pytest.mark.root

MiB = 1 << 20
OLD_FSTAB = """# old OS
UUID=0ld-r00t / ext4 errors=remount-ro 0 1
UUID=AAAA-BBBB /boot/efi vfat umask=0077 0 1
/swapfile none swap sw 0 0
UUID=1111-var /var/log ext4 defaults 0 2
UUID=2222-shared /home/shared ext4 defaults 0 2
"""
NEW_FSTAB = "UUID=5e3d0a1c-7a2b-4c6d-9e8f-0d1e2f3a4b5c / ext4 errors=remount-ro 0 1\n" \
            "UUID=DE30-E5F0 /boot/efi vfat umask=0077,nofail 0 0\n"


# What giving the new OS its state adds to it (peagent.state.linux_target): the deployment record,
# the first-boot units and script, machine-id.
STATE_WRITES = ("var", "etc/systemd/system", "usr/local", "etc/machine-id")
MAC = "52:54:00:12:34:56"
OLD_NETWORK = f"[Match]\nMACAddress={MAC}\n\n[Network]\nAddress=192.168.7.20/24\nGateway=192.168.7.1\nDNS=192.168.7.1\n"
OLD_HOST_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb2xkIGhvc3Qga2V5\n-----END OPENSSH PRIVATE KEY-----\n"
ROOT_HASH = "$6$oldsalt$Vq3oldhashvalue0123456789abcdefABCDEF./"


def write(root: Path, rel: str, data: bytes | str, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def old_os(root: Path) -> None:
    write(root, "etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nID=debian\n')
    write(root, "etc/fstab", OLD_FSTAB)
    write(root, "usr/bin/old-tool", os.urandom(200_000), 0o755)
    write(root, "usr/lib/libold.so", os.urandom(1_000_000))
    os.symlink("usr/lib", root / "lib")
    os.symlink("/", root / "usr/lib/loop")  # deleting the old OS must not follow it
    write(root, "var/cache/junk", os.urandom(2_000_000))
    write(root, "boot/vmlinuz-old", os.urandom(500_000))
    write(root, "opt/vendor/old", "old vendor app")
    write(root, "opt/data/db", os.urandom(300_000), 0o600)  # kept by the task
    write(root, "home/ann/docs/report.bin", os.urandom(3_000_000), 0o600)
    write(root, "home/ann/.bashrc", "ann's own rc\n")
    os.link(root / "home/ann/docs/report.bin", root / "home/ann/report-link")
    os.chown(root / "home/ann/docs/report.bin", 1000, 1000)
    write(root, "srv/www/index.html", "<p>the site</p>")
    # Its identity, for the state capture.
    write(root, "etc/hostname", "old-host\n")
    write(root, "etc/systemd/network/10-static.network", OLD_NETWORK)
    write(root, "etc/ssh/ssh_host_ed25519_key", OLD_HOST_KEY, 0o600)
    write(root, "etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOld old-host\n")
    write(root, "etc/shadow", f"root:{ROOT_HASH}:19000:0:99999:7:::\nann:!:19000:0:99999:7:::\n", 0o640)


def user_data(root: Path) -> dict[str, tuple]:
    """What must survive: content, owner, mode and mtime of everything kept."""
    out = {}
    for top in ("home", "srv", "opt/data"):
        for path in sorted((root / top).rglob("*")):
            st = path.lstat()
            content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            out[str(path.relative_to(root))] = (content, st.st_uid, st.st_mode, st.st_mtime_ns, st.st_ino)
    return out


def trees(tmp_path: Path) -> dict[str, Path]:
    """The new OS's tree and three application trees over it, each a full tree named like the base."""
    base = tmp_path / "trees" / "base" / "rootfs"
    write(base, "etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    write(base, "etc/fstab", NEW_FSTAB)
    write(base, "etc/hostname", "new-os\n")
    write(base, "etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640)
    write(base, "etc/systemd/network/80-dhcp.network", "[Match]\nType=ether\n\n[Network]\nDHCP=yes\n")
    write(base, "usr/lib/systemd/systemd", os.urandom(1000), 0o755)  # a systemd OS: first-boot units
    write(base, "usr/bin/new-tool", os.urandom(400_000), 0o755)
    write(base, "usr/lib/libnew.so", os.urandom(1_500_000))
    os.symlink("usr/lib", base / "lib")
    write(base, "home/ann/.bashrc", "the image's skeleton rc\n")  # the user's own must win
    (base / "srv").mkdir()
    (base / "opt").mkdir()
    out = {"base": base}
    for app, change in (("app1", "opt/app1/run"), ("app2", "opt/app2/run"), ("app3", "opt/app3/run")):
        tree = tmp_path / "trees" / app / "rootfs"
        shutil.copytree(base, tree, symlinks=True)
        write(tree, change, f"{app} binary", 0o755)
        if app == "app3":
            (tree / "usr/bin/new-tool").unlink()  # a whiteout in the layer
            write(tree, "etc/app3.conf", "setting=1\n")
        out[app] = tree
    return out


def expected_os(new: dict[str, Path]) -> dict[str, str]:
    """The new OS as base + app1 + app3 give it: path -> content digest or kind."""
    found = {}
    for name in ("base", "app1", "app3"):
        found.update(listing(new[name]))
    del found["usr/bin/new-tool"]
    return found


def listing(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if any(rel == k or rel.startswith(k + "/") for k in skip):
            continue
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@dataclass(frozen=True)
class Site:
    url: str  # the embedded DP, serving images/{base,app1,app2,app3}
    trees: dict[str, Path]  # what each image was built from
    key: str  # the public key (base64) the images are signed for


@pytest.fixture(scope="module")
def dp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("inplace-dp")
    new = trees(tmp)
    keys = tmp / "keys"
    assert main(["keys", "-o", str(keys)]) == 0
    root = tmp / "dp"
    for name, tree in new.items():
        extra = ["--base-tree", str(new["base"])] if name != "base" else []
        assert main(["image", "build", "--files", str(tree), "-o", str(root / "images" / name), "--name", name,
                     "--version", "1", "--key", str(keys / "peagent.key"), "--frame-size", "65536", *extra]) == 0
    with embedded_dp(root) as server:
        yield Site(server.url, new, (keys / "peagent.pub").read_text().strip())


@pytest.fixture
def disk(loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A GPT disk: an ESP and an ext4 partition holding the old OS; the inventory shows only it."""
    device = loop(160 * MiB)
    subprocess.run(["sgdisk", "-n1:1M:+32M", "-t1:ef00", "-n2:0:0", "-t2:8304", device], check=True,
                   capture_output=True)
    subprocess.run(["partprobe", device], check=False)
    subprocess.run(["mkfs.vfat", "-F", "32", f"{device}p1"], check=True, capture_output=True)
    subprocess.run(["mkfs.ext4", "-q", "-L", "root", f"{device}p2"], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(f"{device}p2", mnt):
        old_os(mnt)
    monkeypatch.setattr(deploy_module, "collect", lambda: Inventory(disks=(inspect(device),)))
    yield device, mnt


def task(tmp_path: Path, dp: Site, device: str, layers: list[str], **inplace: object) -> str:
    doc = {"version": 1, "id": "inplace-1", "dps": [dp.url], "after": "none",
           "target": {"hints": {"name": device}, "inplace": {"keep": ["opt/data"], "headroom": "8MiB", **inplace}},
           "image": {"manifest": "images/base/manifest.json",
                     "layers": [{"manifest": f"images/{name}/manifest.json"} for name in layers]}}
    path = tmp_path / "task.json"
    path.write_text(json.dumps(doc))
    return str(path)


def run(tmp_path: Path, dp: Site, device: str, layers: list[str] | None = None, **inplace: object) -> list[dict]:
    reporter = Reporter(None)
    deploy(DeployOptions(task=task(tmp_path, dp, device, ["app1", "app3"] if layers is None else layers, **inplace),
                         keys=(dp.key,), journal_dir=tmp_path / "run"), reporter)
    return reporter.events()


def deployed(options: DeployOptions, reporter: Reporter) -> list[dict]:
    """Deploy; the status events this run added (what the DP is sent)."""
    before = len(reporter.events())
    deploy(options, reporter)
    return reporter.events()[before:]


def test_the_old_oses_identity_is_captured_before_the_wipe_and_given_to_the_new_one(disk, dp, tmp_path,
                                                                                   monkeypatch) -> None:
    device, mnt = disk
    monkeypatch.setattr(deploy_module, "collect", lambda: Inventory(disks=(inspect(device),), nics=(Nic("eth0", MAC),)))
    path = Path(task(tmp_path, dp, device, ["app1"]))
    doc = json.loads(path.read_text())
    doc["state"] = {"migrate": ["computer_name", "ip_address", "admin_password"], "ssh_host_keys": "keep",
                    "timezone": "Europe/Berlin"}
    path.write_text(json.dumps(doc))
    reporter = Reporter(None)  # its journal holds every event: what the DP would be sent
    events = deployed(DeployOptions(task=str(path), keys=(dp.key,), journal_dir=tmp_path / "run"), reporter)
    with mounted(f"{device}p2", mnt):
        assert (mnt / "etc/hostname").read_text() == "old-host\n"  # migrated, over the image's new-os
        assert "127.0.1.1\told-host" in (mnt / "etc/hosts").read_text()
        [network] = (mnt / "etc/systemd/network").glob("10-peagent-*.network")
        assert f"MACAddress={MAC}" in network.read_text() and "Address=192.168.7.20/24" in network.read_text()
        assert (mnt / "etc/ssh/ssh_host_ed25519_key").read_text() == OLD_HOST_KEY  # kept, as the task asks
        assert (mnt / "etc/ssh/ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
        assert (mnt / "etc/shadow").read_text().startswith(f"root:{ROOT_HASH}:")
        assert os.readlink(mnt / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
        assert (mnt / "etc/machine-id").read_text() == "uninitialized\n"
        record = json.loads((mnt / "var/lib/peagent/deployment.json").read_text())
        assert record["deployment_id"] == "inplace-1" and record["state"]["computer_name"] == "old-host"
        assert record["image"]["name"] == "base + app1" and record["image"]["digest"].startswith("sha256:")
        assert (mnt / "etc/systemd/system/multi-user.target.wants/peagent-firstboot.service").is_symlink()
        assert (mnt / "home/ann/.bashrc").read_text() == "ann's own rc\n"
    shown = json.dumps(events, default=str)
    assert ROOT_HASH not in shown and "b2xkIGhvc3Qga2V5" not in shown
    capture = next(e for e in events if e["phase"] == "capture" and e["data"])
    assert capture["data"]["computer_name"] == "old-host" and "Debian GNU/Linux 11" in capture["message"]
    phases = [e["phase"] for e in events]
    assert phases.index("capture") < phases.index("delete") < phases.index("apply") < phases.index("state")

    # The same images again with skip_if_deployed: the record says they are there, so nothing is touched.
    with mounted(f"{device}p2", mnt):
        write(mnt, "etc/planted", "a re-image would delete this")
    doc["skip_if_deployed"] = True
    path.write_text(json.dumps(doc))
    events = deployed(DeployOptions(task=str(path), keys=(dp.key,), journal_dir=tmp_path / "run"), reporter)
    skipped = [e["message"] for e in events if e["phase"] == "skipped"]
    assert len(skipped) == 1 and "already runs base + app1 1 + 1" in skipped[0] and "nothing was changed" in skipped[0]
    assert "delete" not in [e["phase"] for e in events]
    with mounted(f"{device}p2", mnt):
        assert (mnt / "etc/planted").exists()
    # Another layer makes it another image: deployed.
    doc["image"]["layers"].append({"manifest": "images/app3/manifest.json"})
    path.write_text(json.dumps(doc))
    events = deployed(DeployOptions(task=str(path), keys=(dp.key,), journal_dir=tmp_path / "run"), reporter)
    assert "skipped" not in [e["phase"] for e in events]
    with mounted(f"{device}p2", mnt):
        assert not (mnt / "etc/planted").exists() and (mnt / "etc/app3.conf").exists()


def test_the_old_os_goes_the_new_one_comes_and_the_user_data_stays(disk, dp, tmp_path) -> None:
    device, mnt = disk
    with mounted(f"{device}p2", mnt):
        before = user_data(mnt)
    events = run(tmp_path, dp, device)
    with mounted(f"{device}p2", mnt):
        assert user_data(mnt) == before  # content, owner, mode, mtime, and the very inodes
        assert (mnt / "home/ann/.bashrc").read_text() == "ann's own rc\n"
        os_now = listing(mnt, skip=("home", "srv", "opt/data", "lost+found", "etc/fstab"))
        expected = expected_os(dp.trees)
        expected.pop("etc/fstab")
        written = {k for k in set(os_now) - set(expected) if k.startswith(STATE_WRITES)}  # record, first boot
        assert {k: v for k, v in os_now.items() if k not in written} == \
            {k: v for k, v in expected.items() if not k.startswith(("home", "srv"))} | {"opt": "dir"}
        assert "var/lib/peagent/deployment.json" in written and (mnt / "etc/machine-id").read_text() == "uninitialized\n"
        fstab = (mnt / "etc/fstab").read_text()
        uuid = subprocess.run(["blkid", "-s", "UUID", "-o", "value", f"{device}p2"], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert f"UUID={uuid}\t/\text4\terrors=remount-ro" in fstab
        assert "UUID=AAAA-BBBB\t/boot/efi" in fstab  # this machine's ESP, not the image's
        assert "/swapfile\tnone\tswap" in fstab and "UUID=2222-shared\t/home/shared" in fstab
        assert "/var/log" not in fstab  # the old OS's own mount: dropped
        assert not (mnt / ".peagent-inplace.json").exists()
    phases = [e["phase"] for e in events]
    assert phases.index("inplace") < phases.index("delete") < phases.index("apply") < phases.index("done")
    found = next(e["message"] for e in events if e["phase"] == "inplace" and "Debian" in e["message"])
    assert "Debian GNU/Linux 11 (bullseye) (etc/os-release)" in found


def old_os_listing(mnt: Path) -> dict[str, str]:
    return listing(mnt, skip=("lost+found",))


def test_no_room_is_refused_before_anything_is_deleted(disk, dp, tmp_path) -> None:
    device, mnt = disk
    with mounted(f"{device}p2", mnt):
        before = old_os_listing(mnt)
    with pytest.raises(NoSpaceError, match=r"partition 2 .*nothing was deleted.*needs \d+ MiB.*short by"):
        run(tmp_path, dp, device, headroom="1GiB")
    with mounted(f"{device}p2", mnt):
        assert old_os_listing(mnt) == before
        assert not (mnt / ".peagent-inplace.json").exists()


def test_an_unknown_os_is_refused_unless_forced(disk, dp, tmp_path) -> None:
    device, mnt = disk
    with mounted(f"{device}p2", mnt):
        (mnt / "etc/os-release").unlink()
        before = old_os_listing(mnt)
    with pytest.raises(UnknownOSError, match=r"no partition of /dev/loop\d+ holds an OS peagent recognises; "
                       r"found: partition 2 \(ext4\): no known OS \(top level: boot, etc, home, lib, "):
        run(tmp_path, dp, device)
    with pytest.raises(UnknownOSError, match=r"set target\.inplace\.force to true"):
        run(tmp_path, dp, device, partition={"number": 2})
    with mounted(f"{device}p2", mnt):
        assert old_os_listing(mnt) == before
    run(tmp_path, dp, device, partition={"label": "root"}, force=True)
    with mounted(f"{device}p2", mnt):
        assert (mnt / "etc/hostname").read_text() == "new-os\n"
        assert (mnt / "home/ann/.bashrc").read_text() == "ann's own rc\n"


def test_a_layer_without_its_base_is_refused_naming_the_base(disk, dp, tmp_path) -> None:
    device, mnt = disk
    with mounted(f"{device}p2", mnt):
        before = old_os_listing(mnt)
    doc = json.loads(Path(task(tmp_path, dp, device, [])).read_text())
    doc["image"] = {"manifest": "images/app2/manifest.json"}
    (tmp_path / "task.json").write_text(json.dumps(doc))
    with pytest.raises(ImageError, match=r"is a layer over the tree 'rootfs', and its base is missing"):
        deploy(DeployOptions(task=str(tmp_path / "task.json"), keys=(dp.key,)), Reporter(None))
    with mounted(f"{device}p2", mnt):
        assert old_os_listing(mnt) == before


def test_a_rerun_after_an_interruption_resumes_and_ends_the_same(disk, dp, tmp_path, monkeypatch) -> None:
    device, mnt = disk
    with mounted(f"{device}p2", mnt):
        before = user_data(mnt)
    from peagent.inplace import reimage as reimage_module
    real = reimage_module.apply_loaded

    def cut(images, root, **kw):  # the power goes after the base, before the layers
        real(images[:1], root, **kw)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(reimage_module, "apply_loaded", cut)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, dp, device)
    with mounted(f"{device}p2", mnt):
        marker = json.loads((mnt / ".peagent-inplace.json").read_text())
        assert marker["deployment_id"] == "inplace-1" and marker["os"]["kind"] == "linux"
        assert not (mnt / "etc/os-release").read_text().startswith('PRETTY_NAME="Debian GNU/Linux 11')
    monkeypatch.setattr(reimage_module, "apply_loaded", real)
    events = run(tmp_path, dp, device)
    assert any("resuming" in e["message"] for e in events)
    with mounted(f"{device}p2", mnt):
        assert user_data(mnt) == before
        assert (mnt / "opt/app3/run").exists() and not (mnt / "usr/bin/new-tool").exists()
        fstab = (mnt / "etc/fstab").read_text()
        assert "UUID=2222-shared\t/home/shared" in fstab  # the old OS's fstab, kept in the marker
        assert not (mnt / ".peagent-inplace.json").exists()


def test_a_keep_reached_through_a_symlink_is_refused_before_anything_is_deleted(disk, dp, tmp_path) -> None:
    device, mnt = disk
    with mounted(f"{device}p2", mnt):
        write(mnt, "data/opt/app/state", "kept data that lives under data/")
        shutil.rmtree(mnt / "opt")
        os.symlink("data/opt", mnt / "opt")
        before = old_os_listing(mnt)
    with pytest.raises(InplaceError, match=r"target\.inplace\.keep 'opt/app': on partition 2, opt is a symlink to "
                       r"'data/opt'; keep the path the data really lives at\. Nothing was deleted"):
        run(tmp_path, dp, device, keep=["opt/app"])
    with mounted(f"{device}p2", mnt):
        assert old_os_listing(mnt) == before


def test_a_wim_for_a_linux_partition_is_refused_before_anything_is_deleted(disk, tmp_path) -> None:
    from peagent.files import wim

    device, mnt = disk
    with mounted(f"{device}p2", mnt):
        before = old_os_listing(mnt)
    site = tmp_path / "wim-dp"
    (site / "src").mkdir(parents=True)
    (site / "src" / "readme.txt").write_text("a Windows image, say\n")
    wim.capture(site / "src", site / "w.wim", "Windows")
    digest = hashlib.sha256((site / "w.wim").read_bytes()).hexdigest()
    (tmp_path / "task.json").write_text(json.dumps({
        "version": 1, "id": "inplace-wim", "after": "none",
        "target": {"hints": {"name": device}, "inplace": {}},
        "image": {"wim": "w.wim", "sha256": digest}}))
    with embedded_dp(site) as server, pytest.raises(
            InplaceError, match=r"partition 2 \(ext4\): Debian GNU/Linux 11 \(bullseye\) \(etc/os-release\): a WIM "
                                r"\(Windows\) image goes onto an NTFS partition; nothing was changed"):
        deploy(DeployOptions(task=str(tmp_path / "task.json"), dps=(server.url,), journal_dir=tmp_path / "run"),
               Reporter(None))
    with mounted(f"{device}p2", mnt):
        assert old_os_listing(mnt) == before
