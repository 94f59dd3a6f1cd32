"""Peagent images deployed by the PE: signed images trusted by a key given at boot, refused when
the key is not trusted, and a power cut mid-write that the next boot completes without fetching
the whole image again. The DP is real nginx in the test's namespace; for the power cut, the
fault proxy in front of it slows the blob down (so that the cut lands mid-write) and counts the
bytes each boot fetched."""

from __future__ import annotations

import json
from pathlib import Path

from peagent.image.build import BuildOptions, build_from
from peagent.image.sign import generate_keys
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import mixed_image
from tests.support.nginx import Nginx
from tests.vm.pe import blank_disk, direct, exit_status
from tests.vm.qemu import Drive

SIZE = 96 << 20


def signed_image_dp(workdir: Path, task_extra: dict | None = None) -> tuple[Path, bytes, str, int]:
    """A DP directory with a signed peagent image and a task for it; returns (root, image, public key, blob size)."""
    root = workdir / "dp"
    (root / "tasks").mkdir(parents=True)
    raw = workdir / "image.raw"
    data = mixed_image(raw, SIZE, 5)
    public = generate_keys(workdir / "keys")
    manifest = build_from(str(raw), str(root / "images" / "test"), BuildOptions(name="test", version="1"),
                          key=workdir / "keys" / "peagent.key")
    task = {"version": 1, "id": "image-test", "after": "poweroff", "target": {"allow_overwrite": True},
            "image": {"manifest": "images/test/manifest.json"}, **(task_extra or {})}
    (root / "tasks" / "default.json").write_text(json.dumps(task))
    root.chmod(0o755)
    (workdir / "nginx").mkdir()
    return root, data, public.to_text(), manifest.blob.size


BLOB = "/images/test/image.blob"


def test_a_power_cut_mid_write_is_completed_by_the_next_boot(pe, workdir, netns, start_vm) -> None:
    root, data, key, blob_size = signed_image_dp(workdir)
    # cache=none: what the guest had not flushed is lost, as on a real power cut.
    disk = Drive(blank_disk(workdir / "target.img", 128 << 20), "virtio", serial="T1", cache="none")
    slow = [Fault("slow", rate=512 << 10, times=None, path=BLOB)]  # per connection; 4 connections
    with Nginx(root, work=workdir / "nginx", ns=netns, address="127.0.0.1", serve=False) as dp, \
            FaultProxy(dp.url, slow, ns=netns, port=8080) as proxy:
        params = f"peagent.dp=http://10.0.2.2:8080/ peagent.key={key}"
        vm = start_vm(direct(pe, params, [disk]), name="cut")
        vm.expect(r"image: test 1: ready", 180)
        vm.expect(r"write: (?:[2-9]\d|\d{3})\.\d/96\.0 MiB", 120)  # 20+ MiB written (O_DIRECT: on the disk)
        vm.kill()
        proxy.wait_idle()
        first = proxy.body_bytes(BLOB)
        assert disk.path.read_bytes()[:SIZE] != data, "the power cut did not land mid-write"
        vm = start_vm(direct(pe, params, [disk]), name="again")
        kept = vm.expect(r"verify: .*kept (\d+\.\d) MiB in place", 240)
        assert exit_status(vm) == 0
        proxy.wait_idle()
        second = proxy.body_bytes(BLOB) - first
    assert disk.path.read_bytes()[:SIZE] == data
    assert float(kept.group(1)) > 0, "the second boot found nothing of the first one's work"
    assert second < blob_size, "the second boot fetched the whole image again"
    print(f"\nfigure: blob {blob_size} bytes; first boot fetched {first}, second {second} "
          f"({(first + second) / blob_size:.2f} x the blob in total); kept {kept.group(1)} MiB in place")


def test_an_image_signed_by_an_untrusted_key_is_refused_before_writing(pe, workdir, netns, start_vm) -> None:
    root, _, _, _ = signed_image_dp(workdir)
    other = generate_keys(workdir / "other").to_text()
    disk = blank_disk(workdir / "target.img", 128 << 20)
    with Nginx(root, work=workdir / "nginx", ns=netns, port=8080, address="127.0.0.1", serve=False):
        vm = start_vm(direct(pe, f"peagent.dp=http://10.0.2.2:8080/ peagent.key={other}", [Drive(disk, "virtio")]))
        assert exit_status(vm) == 6
    assert "error [image.signature]: the manifest is signed by key" in vm.console
    assert disk.read_bytes() == bytes(128 << 20)
