"""The demo OS image's build inputs (demo/os), checked without building; and the built image's
layout, when one is present (build/demo, or PEAGENT_DEMO_OS_DIR).

Booting it is the VM tests' business; these catch, in a second, the mistakes that would
otherwise only show up minutes later as a VM that does not find its root or its marker line.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo" / "os"
BUILD = DEMO / "build.sh"
IMAGE_DIR = Path(os.environ.get("PEAGENT_DEMO_OS_DIR", REPO / "build" / "demo"))
KVER = "6.1.0-99-amd64"  # any version: the patterns use '*'


def list_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def dpkg_filters() -> list[tuple[str, str]]:
    """(kind, pattern) in file order, as build.sh passes them to dpkg."""
    filters = []
    for line in list_lines(DEMO / "path-exclude.list"):
        if line.startswith("include "):
            filters.append(("include", line.split(None, 1)[1]))
        else:
            filters.append(("exclude", line))
    return filters


def dropped(path: str) -> bool:
    """Whether dpkg drops PATH: the last filter that matches decides, as in dpkg."""
    kind = "include"
    for k, pattern in dpkg_filters():
        if fnmatch.fnmatchcase(path, pattern):
            kind = k
    return kind == "exclude"


def build_var(name: str) -> str:
    m = re.search(rf"^{name}=(\S+)", BUILD.read_text(), re.M)
    assert m, name
    return m.group(1)


def test_build_script_parses() -> None:
    subprocess.run(["bash", "-n", str(BUILD)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-x", str(BUILD)], check=True, cwd=DEMO)


def test_cache_key_covers_every_input() -> None:
    m = re.search(r"^INPUTS=\(([^)]*)\)", BUILD.read_text(), re.M)
    assert m, "build.sh defines INPUTS=(...)"
    inputs = m.group(1).split()
    for f in DEMO.rglob("*"):
        if f.is_file() and f.name != "README.md" and "__pycache__" not in f.parts:
            rel = f.relative_to(DEMO)
            assert rel.parts[0] in inputs, f"{rel} is not part of the cache key"


def test_packages() -> None:
    packages = list_lines(DEMO / "packages.list")
    assert len(packages) == len(set(packages))
    for p in packages:
        assert re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", p), p
    for needed in (
        "linux-image-amd64",
        "initramfs-tools",
        "systemd",
        "systemd-sysv",
        "udev",
        "iproute2",
        "openssh-server",
        "e2fsprogs",
    ):
        assert needed in packages
    assert "cloud-init" not in packages


def test_path_filters_are_absolute() -> None:
    for _, p in dpkg_filters():
        assert p.startswith("/"), p


@pytest.mark.parametrize(
    "path",
    [
        f"/lib/modules/{KVER}/kernel/drivers/block/virtio_blk.ko",
        f"/lib/modules/{KVER}/kernel/drivers/scsi/virtio_scsi.ko",
        f"/lib/modules/{KVER}/kernel/drivers/scsi/sd_mod.ko",
        f"/lib/modules/{KVER}/kernel/drivers/scsi/megaraid/megaraid_sas.ko",
        f"/lib/modules/{KVER}/kernel/drivers/nvme/host/nvme.ko",
        f"/lib/modules/{KVER}/kernel/drivers/ata/ahci.ko",
        f"/lib/modules/{KVER}/kernel/drivers/usb/storage/usb-storage.ko",
        f"/lib/modules/{KVER}/kernel/drivers/usb/host/xhci-pci.ko",
        f"/lib/modules/{KVER}/kernel/drivers/hid/usbhid/usbhid.ko",
        f"/lib/modules/{KVER}/kernel/drivers/net/virtio_net.ko",
        f"/lib/modules/{KVER}/kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
        f"/lib/modules/{KVER}/kernel/drivers/md/dm-mod.ko",
        f"/lib/modules/{KVER}/kernel/fs/ext4/ext4.ko",
        f"/lib/modules/{KVER}/kernel/fs/fat/vfat.ko",
        f"/lib/modules/{KVER}/kernel/fs/nls/nls_cp437.ko",
        f"/lib/modules/{KVER}/kernel/fs/xfs/xfs.ko",
        f"/lib/modules/{KVER}/kernel/fs/nfs/nfs.ko",
        "/usr/share/doc/openssh-server/copyright",
        "/usr/lib/systemd/systemd",
    ],
)
def test_needed_files_are_kept(path: str) -> None:
    assert not dropped(path)


@pytest.mark.parametrize(
    "path",
    [
        f"/lib/modules/{KVER}/kernel/drivers/gpu/drm/amd/amdgpu/amdgpu.ko",
        f"/lib/modules/{KVER}/kernel/sound/pci/hda/snd-hda-intel.ko",
        f"/lib/modules/{KVER}/kernel/drivers/net/wireless/intel/iwlwifi/iwlwifi.ko",
        f"/lib/modules/{KVER}/kernel/drivers/media/usb/uvc/uvcvideo.ko",
        "/usr/share/doc/openssh-server/changelog.Debian.gz",
        "/usr/share/man/man8/sshd.8.gz",
    ],
)
def test_bulk_is_dropped(path: str) -> None:
    assert dropped(path)


def test_overlay() -> None:
    overlay = DEMO / "overlay"
    for script in ("usr/local/sbin/peagent-demo-os-up", "etc/initramfs-tools/hooks/demo-os-modules"):
        assert os.access(overlay / script, os.X_OK), script
        subprocess.run(["sh", "-n", str(overlay / script)], check=True)
    for unit in (overlay / "etc/systemd/system").glob("*.service"):
        text = unit.read_text()
        assert "[Service]" in text and "[Install]" in text, unit.name
    # The line the VM tests and `make demo` wait for.
    marker = (overlay / "usr/local/sbin/peagent-demo-os-up").read_text()
    assert 'line="peagent-demo-os: up hostname=' in marker
    assert (
        "After=multi-user.target" in (overlay / "etc/systemd/system/peagent-demo-os-up.service").read_text()
    )
    # Built in a chroot: without it the OS would wait for the build host's swap at every boot.
    assert "RESUME=none" in (overlay / "etc/initramfs-tools/conf.d/demo-os").read_text()


def test_grub_configs() -> None:
    embedded = (DEMO / "grub" / "embedded.cfg").read_text()
    grub = (DEMO / "grub" / "grub.cfg").read_text()
    assert "@ROOT_LABEL@" in embedded and "@ROOT_LABEL@" in grub
    assert "configfile" in embedded and "gpt2" in embedded
    assert "root=$root_arg" in grub and "PARTUUID=" in grub
    assert "console=tty0 console=ttyS0,115200" in grub
    # Never a device name: the image boots as vda, sda or nvme0n1.
    assert "/dev/" not in "\n".join(list_lines(DEMO / "grub" / "grub.cfg"))


# --- the built image, when there is one -------------------------------------------------------

needs_image = pytest.mark.skipif(
    not (IMAGE_DIR / "demo-os.json").is_file(), reason=f"no demo OS image in {IMAGE_DIR} (make demo-image)"
)


def sgdisk_info(img: Path, part: int) -> dict[str, str]:
    out = subprocess.run(["sgdisk", "-i", str(part), str(img)], check=True, capture_output=True, text=True)
    return dict(
        (k.strip(), v.strip())
        for k, v in (line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
    )


@needs_image
@pytest.mark.skipif(not shutil.which("sgdisk"), reason="needs sgdisk (gdisk)")
def test_image_layout() -> None:
    img = IMAGE_DIR / "demo-os.img"
    info = json.loads((IMAGE_DIR / "demo-os.json").read_text())
    assert info["name"] == "demo-os"
    assert img.stat().st_size == info["size"] <= 512 << 20
    assert (IMAGE_DIR / "demo-os.img.zst").stat().st_size == info["compressed_size"]

    esp, root, bios = (sgdisk_info(img, n) for n in (1, 2, 3))
    assert esp["Partition GUID code"].startswith("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
    assert esp["First sector"].startswith("4096 ")
    assert root["Partition GUID code"].startswith("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")  # x86-64 root
    assert root["Partition unique GUID"].lower() == build_var("ROOT_PARTUUID") == info["root_partuuid"]
    assert bios["Partition GUID code"].startswith("21686148-6449-6E6F-744E-656564454649")  # BIOS boot

    with img.open("rb") as f:
        mbr = f.read(512)
        f.seek(2048 * 512)
        core = f.read(512)
    assert mbr[510:] == b"\x55\xaa" and mbr[0x1C2] == 0xEE  # protective MBR
    assert int.from_bytes(mbr[0x5C:0x64], "little") == 2048  # boot.img -> core.img
    assert int.from_bytes(core[500:508], "little") == 2049  # core.img's blocklist


@needs_image
@pytest.mark.skipif(not shutil.which("mdir"), reason="needs mtools")
def test_image_esp_has_removable_media_loader() -> None:
    img = IMAGE_DIR / "demo-os.img"
    out = subprocess.run(
        ["mdir", "-b", "-i", f"{img}@@{2048 * 512 * 2}", "::/EFI/BOOT"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "BOOTX64.EFI" in out.upper()


@needs_image
def test_image_hashes() -> None:
    info = json.loads((IMAGE_DIR / "demo-os.json").read_text())
    for name, key in (("demo-os.img", "sha256"), ("demo-os.img.zst", "compressed_sha256")):
        h = hashlib.sha256()
        with (IMAGE_DIR / name).open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == info[key], name
