"""An in-place re-image in the VM: a machine running the demo OS, with user data in /home and /srv,
boots the PE, which deletes the old OS from its root partition, lays down a new one (a base file
image plus a layer, fetched from the DP), and reboots; the new OS comes up with the user's files
byte-identical.

The old OS is the demo OS's disk image with user files added; the new OS is the demo OS's root
tree as a file image (the base) plus a layer that renames the host, so the console shows which
OS booted: ``peagent-demo-os: up hostname=inplace-new``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from peagent.image.sign import generate_keys
from tests.support.dp import DPProcess
from tests.vm.conftest import BUILD, ROOT
from tests.vm.pe import STATUS, direct, exit_status
from tests.vm.qemu import Drive, Machine

SERIAL = "INPLACE-DISK-01"
NEW_HOSTNAME = "inplace-new"


@contextlib.contextmanager
def partition(disk: Path, number: int, where: Path, readonly: bool = False) -> Iterator[Path]:
    """Partition ``number`` of the disk image mounted on ``where``."""
    # Not --read-only: partition scanning then makes no partition nodes here; the mount is read-only instead.
    device = subprocess.run(["losetup", "--find", "--show", "--partscan", str(disk)], capture_output=True, text=True,
                            check=True).stdout.strip()
    where.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["partprobe", device], check=True)  # no udev here: partprobe makes the partition nodes
        subprocess.run(["mount", *(["-o", "ro"] if readonly else []), f"{device}p{number}", str(where)], check=True)
        try:
            yield where
        finally:
            subprocess.run(["umount", str(where)], check=True)
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def images(demo: Path) -> tuple[Path, str]:
    """The demo OS's root tree as a base file image and a layer over it, signed; built once per demo build."""
    info = json.loads((demo / "demo-os.json").read_text())
    out = demo / "inplace"
    stamp = out / "built-from.sha256"
    keys = out / "keys"
    if stamp.exists() and stamp.read_text() == info["sha256"]:
        return out, (keys / "peagent.pub").read_text().strip()
    shutil.rmtree(out, ignore_errors=True)
    generate_keys(keys)
    base, new = out / "trees/base/rootfs", out / "trees/new/rootfs"
    with partition(demo / "demo-os.img", 2, base, readonly=True):
        build(base, out / "images/base", keys, "demo-os-base", "--capture")  # as from a golden system
        new.parent.mkdir(parents=True)
        subprocess.run(["cp", "-a", str(base), str(new)], check=True)
        (new / "etc/hostname").write_text(NEW_HOSTNAME + "\n")
        (new / "etc/peagent-inplace-layer").write_text("the layer was applied\n")
        build(new, out / "images/layer", keys, "demo-os-renamed", "--capture", "--base-tree", str(base))
    shutil.rmtree(out / "trees")
    stamp.write_text(info["sha256"])
    return out, (keys / "peagent.pub").read_text().strip()


def build(tree: Path, out: Path, keys: Path, name: str, *extra: str) -> None:
    subprocess.run([str(ROOT / ".venv/bin/peagent"), "image", "build", "--files", str(tree), "-o", str(out),
                    "--name", name, "--version", "1", "--key", str(keys / "peagent.key"), *extra], check=True,
                   stdout=subprocess.DEVNULL)


def user_files(root: Path) -> dict[str, tuple]:
    found = {}
    for top in ("home", "srv"):
        for path in sorted((root / top).rglob("*")):
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            found[str(path.relative_to(root))] = (digest, st.st_uid, st.st_mode, st.st_mtime_ns)
    return found


def test_an_in_place_reimage_keeps_the_user_files_and_boots_the_new_os(pe, workdir, netns, start_vm) -> None:
    demo = BUILD / "demo"
    subprocess.run([str(ROOT / "demo/os/build.sh"), str(demo)], check=True)  # a cache hit after `make`
    made, key = images(demo)
    disk = workdir / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(demo / "demo-os.img"), str(disk)], check=True)
    with partition(disk, 2, workdir / "mnt") as root:  # the old OS, lived in
        (root / "home/ann/docs").mkdir(parents=True)
        (root / "home/ann/docs/thesis.bin").write_bytes(os.urandom(8 << 20))
        (root / "home/ann/notes.txt").write_text("remember the milk\n")
        os.chown(root / "home/ann", 1000, 1000)
        (root / "srv/www").mkdir(parents=True)
        (root / "srv/www/index.html").write_text("<p>kept</p>\n")
        (root / "etc/old-os-only").write_text("this goes with the old OS\n")
        before = user_files(root)

    dp_root = workdir / "dp"
    (dp_root / "tasks").mkdir(parents=True)
    (dp_root / "images").symlink_to((made / "images").resolve())
    task = {"version": 1, "id": "inplace-vm-1", "after": "reboot", "status": STATUS,
            "target": {"hints": {"serial": SERIAL}, "inplace": {"headroom": "16MiB"}},
            "image": {"manifest": "images/base/manifest.json", "layers": [{"manifest": "images/layer/manifest.json"}]}}
    (dp_root / "tasks/default.json").write_text(json.dumps(task))
    with DPProcess(dp_root, netns.prefix()) as dp:
        params = f"peagent.dp={dp.guest_url} peagent.status={dp.guest_url}status peagent.key={key}"
        vm = start_vm(direct(pe, params, [Drive(disk, "virtio", serial=SERIAL)]), name="pe")
        vm.expect(r"inplace: partition 2 \(ext4\): Debian GNU/Linux 12 \(bookworm\) \(usr/lib/os-release\)", 240)
        status = exit_status(vm, timeout=900)
        assert status == 0, vm.tail()
        vm.expect(r"power: reboot", 60)
        vm.wait_exit(60)
        events = dp.events()
    phases = [e["phase"] for e in events if e["done"] is None]
    assert phases.index("inplace") < phases.index("delete") < phases.index("apply") < phases.index("done")

    nvram = workdir / "OVMF_VARS.fd"
    machine = Machine(firmware="uefi", uefi_vars=nvram, nic="virtio-net-pci",
                      drives=[Drive(disk, "virtio", serial=SERIAL, bootindex=0)])
    vm = start_vm(machine, name="firstboot")
    up = vm.expect(r"(peagent-demo-os: up [^\n]*)\n", 600).group(1)
    assert f"hostname={NEW_HOSTNAME}" in up and "root=/dev/vda2" in up
    vm.kill()

    with partition(disk, 2, workdir / "mnt") as root:
        assert user_files(root) == before
        assert not (root / "etc/old-os-only").exists()
        assert (root / "etc/peagent-inplace-layer").read_text() == "the layer was applied\n"
        assert not (root / ".peagent-inplace.json").exists()
