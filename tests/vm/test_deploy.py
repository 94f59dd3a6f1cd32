"""The first deploy: in the PE, the agent fetches its task from a DP, writes the image to the
target disk, verifies it, and powers off or reboots as the task says; and every bad input ends
in a clear error on the console with the disk untouched."""

from __future__ import annotations

import json

from tests.support.dp import DPProcess
from tests.support.images import mixed_image, sha256, zstd
from tests.vm.pe import DISK_SIZE, IMAGE_SIZE, blank_disk, direct, exit_status, image_task, make_dp
from tests.vm.qemu import Drive


def test_deploy_writes_exactly_the_image_verifies_and_reports(pe, workdir, netns, start_vm) -> None:
    root, image = make_dp(workdir, {"after": "reboot"})
    disk = blank_disk(workdir / "target.img", DISK_SIZE)
    with DPProcess(root, netns.prefix()) as dp:
        params = f"peagent.dp={dp.guest_url} peagent.status={dp.guest_url}status"
        vm = start_vm(direct(pe, params, [Drive(disk, "virtio", serial="TARGET01")]))
        # peagent serve (no rules: the machine's task file, here tasks/default.json) hands the task out as a
        # deployment of its own, under the task's id and a suffix, with a status token.
        task_line = vm.expect(r"task: (vm-test-0001-[0-9a-f]{8}) from http://10.0.2.2:8080/api/v1/task\?mac=", 120)
        vm.expect(r"verify: sha256 of the image matches \(given\)", 120)
        assert exit_status(vm) == 0
        vm.expect(r"power: reboot", 30)
        vm.wait_exit(60)  # -no-reboot: the guest's reboot ends QEMU
        events = dp.events()
    data = disk.read_bytes()
    assert data[:IMAGE_SIZE] == image
    assert data[IMAGE_SIZE:] == bytes(DISK_SIZE - IMAGE_SIZE)
    assert [e["source"] for e in events[:1]] == ["server"] and events[0]["phase"] == "task"  # the hand-out
    events = [e for e in events if e["source"] == "pe"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    phases = [e["phase"] for e in events if e["done"] is None]
    assert phases[:4] == ["inventory", "task", "image", "write"]
    assert phases[-3:] == ["verify", "state", "done"]
    assert any(e["phase"] == "write" and e["done"] == e["total"] == IMAGE_SIZE for e in events)
    assert events[-2]["message"].startswith("no state, record or boot entry: the written image must hold exactly one OS")
    assert {e["deployment_id"] for e in events} == {task_line.group(1)}
    assert events[0]["machine"]["macs"] == ["52:54:00:12:34:56"]


def test_hints_pick_the_named_disk_among_several(pe, workdir, netns, start_vm) -> None:
    root, image = make_dp(workdir, {"target": {"hints": {"serial": "NVME-TARGET"}}})
    other = blank_disk(workdir / "other.img", DISK_SIZE)
    target = blank_disk(workdir / "target.img", DISK_SIZE)
    drives = [Drive(other, "virtio", serial="VIRTIO-OTHER"), Drive(target, "nvme", serial="NVME-TARGET")]
    with DPProcess(root, netns.prefix()) as dp:
        vm = start_vm(direct(pe, f"peagent.dp={dp.guest_url}", drives))
        assert exit_status(vm) == 0
    assert target.read_bytes()[:IMAGE_SIZE] == image
    assert other.read_bytes() == bytes(DISK_SIZE)


def _refused(pe, workdir, netns, start_vm, params: str = "", drives=None, nic=True, **dp) -> tuple[int, str]:
    root, _ = make_dp(workdir, **dp)
    disk = blank_disk(workdir / "target.img", DISK_SIZE)
    drives = [Drive(disk, "virtio", serial="TARGET01")] if drives is None else drives
    with DPProcess(root, netns.prefix()) as dp:
        machine = direct(pe, f"peagent.dp={dp.guest_url} {params}", drives,
                         nic="virtio-net-pci" if nic else None)
        vm = start_vm(machine)
        status = exit_status(vm)
        vm.expect("power: off", 30)
    assert disk.read_bytes() == bytes(DISK_SIZE), "the disk was touched"
    return status, vm.console


def test_a_task_url_that_fails_is_a_clear_error(pe, workdir, netns, start_vm) -> None:
    status, console = _refused(pe, workdir, netns, start_vm, "peagent.task=http://10.0.2.2:8080/tasks/missing.json",
                               no_task=True)
    assert status == 4
    assert ("error [fetch.not_found]: not found on any DP "
            "(http://10.0.2.2:8080/tasks/missing.json: HTTP 404)") in console


def test_a_malformed_task_names_the_field(pe, workdir, netns, start_vm) -> None:
    task = {"version": 1, "image": {"url": "images/test.img.zst", "sha256": "abc"}}
    status, console = _refused(pe, workdir, netns, start_vm, raw_task=json.dumps(task))
    assert status == 2
    assert ('error [task.invalid]: image.sha256: expected 64 hex digits (the sha256 of the raw image), '
            'found "abc"') in console


def test_no_network_is_a_clear_error(pe, workdir, netns, start_vm) -> None:
    status, console = _refused(pe, workdir, netns, start_vm, nic=False, no_task=True)
    assert status == 4
    assert "network: no DHCP lease on any interface (NICs: none)" in console
    assert "error [network.down]: no network" in console


def test_no_disk_is_a_clear_error(pe, workdir, netns, start_vm) -> None:
    root, _ = make_dp(workdir)
    with DPProcess(root, netns.prefix()) as dp:
        vm = start_vm(direct(pe, f"peagent.dp={dp.guest_url}"))
        assert exit_status(vm) == 3
    assert ("error [target.refused]: no disk is eligible as the target (no hints). "
            "Disks seen: no disks at all") in vm.console


def test_a_corrupt_image_is_never_reported_as_deployed(pe, workdir, netns, start_vm) -> None:
    image = mixed_image(workdir / "image.raw", IMAGE_SIZE, 7)  # what make_dp will serve
    wrong = image_task(image)
    wrong["image"]["sha256"] = sha256(image + b"x")
    root, _ = make_dp(workdir, raw_task=json.dumps(wrong))
    disk = blank_disk(workdir / "target.img", DISK_SIZE)
    with DPProcess(root, netns.prefix()) as dp:
        params = f"peagent.dp={dp.guest_url} peagent.status={dp.guest_url}status"
        vm = start_vm(direct(pe, params, [Drive(disk, "virtio")]))
        assert exit_status(vm) == 5
        events = dp.events()
    assert (f"error [verify.mismatch]: sha256 of the {IMAGE_SIZE} bytes of test.img.zst is {sha256(image)}; "
            f"expected {wrong['image']['sha256']} (given)") in vm.console
    assert "done" not in [e["phase"] for e in events]
    assert events[-1]["phase"] == "failed" and events[-1]["error"]["code"] == "verify.mismatch"


def test_debug_shell_instead_of_power_off_on_failure(pe, workdir, netns, start_vm) -> None:
    root, _ = make_dp(workdir, raw_task=json.dumps({"version": 1, "image": {"url": 5}}))  # invalid: exit 2
    with DPProcess(root, netns.prefix()) as dp:
        vm = start_vm(direct(pe, f"peagent.dp={dp.guest_url} peagent.shell"))
        assert exit_status(vm) == 2
        vm.expect(r"shell: starting a debug shell", 30)
        vm.expect(r"# $", 30)
        vm.send("echo shell-works-$((6 * 7))\n")
        vm.expect(r"shell-works-42", 30)
        vm.send("exit\n")
        vm.expect(r"power: off", 30)


def test_power_loss_mid_write_then_a_redeploy_completes(pe, workdir, netns, start_vm) -> None:
    size = 96 << 20
    image = mixed_image(workdir / "image.raw", size, 11)
    root = workdir / "dp"
    (root / "images").mkdir(parents=True)
    (root / "tasks").mkdir()
    zstd(workdir / "image.raw", root / "images" / "big.img.zst")
    task = {"version": 1, "id": "power-loss", "target": {"allow_overwrite": True}, "after": "poweroff",
            "image": {"url": "images/big.img.zst", "sha256": sha256(image), "size": size}}
    (root / "tasks" / "default.json").write_text(json.dumps(task))
    # cache=none: what the guest had not flushed is lost, as on a real power cut.
    disk = Drive(blank_disk(workdir / "target.img", 128 << 20), "virtio", serial="T1", cache="none")
    with DPProcess(root, netns.prefix()) as dp:
        vm = start_vm(direct(pe, f"peagent.dp={dp.guest_url}", [disk]), name="cut")
        vm.expect(r"write: images/big.img.zst -> /dev/vda", 120)
        vm.expect(r"write: \d+\.\d/96\.0 MiB", 60)
        vm.kill()
        # What reached the disk depends on what the guest had flushed; the image is not complete.
        assert disk.path.read_bytes()[:size] != image, "the power cut did not land mid-write"
        vm = start_vm(direct(pe, f"peagent.dp={dp.guest_url}", [disk]), name="again")
        assert exit_status(vm) == 0
    assert disk.path.read_bytes()[:size] == image
