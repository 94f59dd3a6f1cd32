from __future__ import annotations

import json
from dataclasses import replace

import pytest

from peagent.disk.capabilities import EraseCaps
from peagent.errors import EraseUnsupportedError, ImageError, InplaceError, TargetError, TaskError, WrongMachineError
from peagent.inventory import Disk, Dmi, Inventory, Nic, Partition
from peagent.plan import make_plan
from peagent.task import parse_task

SHA = "b" * 64
INV = Inventory(
    disks=(Disk(name="vda", path="/dev/vda", size=64 << 20, transport="virtio", serial="T1"),),
    nics=(Nic(name="ens3", mac="52:54:00:12:34:56"),),
    dmi=Dmi(product_uuid="4c4c4544-0042-3010-8048-b4c04f4e3232", product_serial="SN1"),
)


def task(**overrides: object):
    doc: dict[str, object] = {"version": 1, "id": "d1",
                              "image": {"url": "images/x.img.zst", "sha256": SHA, "size": 1 << 20}}
    doc.update(overrides)
    return parse_task(json.dumps(doc))


def test_plan_resolves_sources_and_lists_steps() -> None:
    plan = make_plan(task(after="poweroff"), INV, ("http://dp1:8080", "http://dp2/base/"))
    assert plan.image_urls == ("http://dp1:8080/images/x.img.zst", "http://dp2/base/images/x.img.zst")
    assert plan.render().splitlines() == [
        "deployment d1",
        "target: /dev/vda (0.1 GB virtio, unknown model, serial T1)",
        "  because: the only eligible disk (no hints given)",
        "  because: looks blank (no partition table or filesystem)",
        "image sources: http://dp1:8080/images/x.img.zst, http://dp2/base/images/x.img.zst",
        "steps:",
        "  1. stream images/x.img.zst (zstd, 1048576 bytes) onto /dev/vda",
        f"  2. verify sha256 {SHA} over every byte written",
        "  3. find the one OS the image holds and give it a deployment record and a first-boot unit that reports "
        "completion under this deployment id (an image without an OS is left as written)",
        "  4. UEFI: a boot entry named after the image for its loader first in BootOrder, the old OS's entries on "
        "/dev/vda removed; BIOS: check the disk's boot code",
        "  5. power off",
    ]
    doc = plan.to_dict()
    assert doc["target"]["path"] == "/dev/vda" and doc["image"]["sources"][1].startswith("http://dp2/")


def test_task_dps_win_over_boot_dps() -> None:
    plan = make_plan(task(dps=["http://task-dp/"]), INV, ("http://boot-dp/",))
    assert plan.image_urls == ("http://task-dp/images/x.img.zst",)


def test_relative_image_without_dps_is_an_error() -> None:
    with pytest.raises(TaskError) as info:
        make_plan(task(), INV, ())
    assert info.value.field == "image.url"
    assert info.value.found == "the relative path 'images/x.img.zst' and no DPs"


def test_image_larger_than_the_target_is_refused() -> None:
    big = task(image={"url": "http://dp/x.img", "sha256": SHA, "size": (64 << 20) + 1})
    with pytest.raises(ImageError, match=r"larger than the target /dev/vda \(67108864 bytes\)"):
        make_plan(big, INV)


@pytest.mark.parametrize(("machine", "message"), [
    ({"mac": "52:54:00:00:00:01"}, "the task is for MAC 52:54:00:00:00:01; this machine has 52:54:00:12:34:56"),
    ({"uuid": "00000000-0000-0000-0000-000000000001"},
     "the task is for SMBIOS UUID 00000000-0000-0000-0000-000000000001; this machine is 4c4c4544-"),
    ({"serial": "SN2"}, "the task is for serial SN2; this machine is SN1"),
])
def test_a_task_for_another_machine_is_refused(machine, message) -> None:
    with pytest.raises(WrongMachineError) as info:
        make_plan(task(machine=machine), INV, ("http://dp/",))
    assert str(info.value).startswith(message)


def test_a_task_for_this_machine_passes() -> None:
    t = task(machine={"mac": "52:54:00:12:34:56", "serial": "SN1",
                      "uuid": "4C4C4544-0042-3010-8048-B4C04F4E3232"})
    assert make_plan(t, INV, ("http://dp/",)).target.disk.name == "vda"


DATA_DISK = Disk(name="vda", path="/dev/vda", size=8 << 30, transport="virtio", serial="T1",
                 partition_table="gpt", partitions=(
                     Partition(number=1, path="/dev/vda1", start=1 << 20, size=1 << 30, fstype="vfat", label="ESP"),
                     Partition(number=2, path="/dev/vda2", start=(1 << 30) + (1 << 20), size=2 << 30, fstype="ext4",
                               label="DATA")))
DATA_INV = Inventory(disks=(DATA_DISK,), nics=INV.nics)
LAYOUT = {"table": "gpt", "create": [{"role": "esp", "size": "512MiB"}, {"role": "linux-root", "size": "fill",
                                                                         "fs": "ext4"}]}


def test_a_whole_disk_image_over_data_needs_allow_overwrite() -> None:
    with pytest.raises(TargetError) as info:
        make_plan(task(), DATA_INV, ("http://dp/",))
    assert str(info.value) == ("/dev/vda (8.6 GB virtio, unknown model, serial T1) holds data this deploy would "
                               "destroy (a gpt partition table, vfat on partition 1, ext4 on partition 2); "
                               "set target.allow_overwrite to true to overwrite it")
    plan = make_plan(task(target={"allow_overwrite": True}), DATA_INV, ("http://dp/",))
    assert plan.destroys == ("a gpt partition table", "vfat on partition 1", "ext4 on partition 2")
    assert "overwrites (allowed by the task): a gpt partition table" in plan.render()


def test_a_layout_keeping_the_data_destroys_only_what_it_deletes() -> None:
    keep_data = {"table": "gpt", "keep": [{"label": "DATA"}], "create": [{"role": "esp", "size": "512MiB"}]}
    t = parse_task(json.dumps({"version": 1, "target": {"partitions": keep_data}}))
    with pytest.raises(TargetError, match=r"would destroy \(vfat on partition 1\)"):
        make_plan(t, DATA_INV)
    keep_both = {"table": "gpt", "keep": [{"label": "DATA"}, {"number": 1}],
                 "create": [{"role": "linux-data", "size": "1GiB"}]}
    plan = make_plan(parse_task(json.dumps({"version": 1, "target": {"partitions": keep_both}})), DATA_INV)
    assert plan.destroys == ()
    assert plan.image is None and plan.image_urls == ()
    assert plan.steps()[-1] == "reboot"
    assert any(step.startswith("partition /dev/vda: keep 2: ext4 'DATA'") for step in plan.steps())


def test_a_fresh_layout_on_a_blank_disk_needs_nothing_more() -> None:
    blank = Inventory(disks=(Disk(name="vda", path="/dev/vda", size=8 << 30, transport="virtio"),))
    plan = make_plan(parse_task(json.dumps({"version": 1, "target": {"partitions": LAYOUT}})), blank)
    assert plan.destroys == ()
    assert plan.to_dict()["partitions"]["fresh"] is True


@pytest.mark.parametrize(("doc", "field", "found"), [
    ({"version": 1}, "image", "none of them"),
    ({"version": 1, "target": {"erase": "zero", "partitions": {**LAYOUT, "keep": [{"number": 1}]}}},
     "target.erase", "erase mode 'zero'"),
    ({"version": 1, "target": {"partitions": LAYOUT}, "image": {"url": "x", "sha256": SHA}}, "target.partitions",
     "a layout"),
])
def test_a_task_must_do_one_consistent_thing(doc, field, found) -> None:
    with pytest.raises(TaskError) as info:
        parse_task(json.dumps(doc))
    assert (info.value.field, info.value.found) == (field, found)


def caps_disk(**caps: object) -> Inventory:
    c = EraseCaps(device="/dev/vda", size=8 << 30, interface="virtio", **caps)  # type: ignore[arg-type]
    return Inventory(disks=(replace(DATA_DISK, erase_caps=c),))


def test_an_erase_is_checked_against_the_disk_and_destroys_everything() -> None:
    zero = parse_task(json.dumps({"version": 1, "target": {"erase": "zero", "allow_overwrite": True}}))
    plan = make_plan(zero, caps_disk())
    assert plan.destroys == ("a gpt partition table", "vfat on partition 1", "ext4 on partition 2")
    assert plan.steps()[0].startswith("erase /dev/vda (zero): write zeroes over all 8 GiB of /dev/vda")
    assert plan.to_dict()["erase"] == {"mode": "zero", "method": "auto", "samples": 64}
    discard = parse_task(json.dumps({"version": 1, "target": {"erase": "discard", "allow_overwrite": True}}))
    with pytest.raises(EraseUnsupportedError, match=r"discard: /dev/vda does not support discard"):
        make_plan(discard, caps_disk())
    assert make_plan(discard, caps_disk(discard=True, discard_max_bytes=1 << 30)).erase.mode == "discard"
    with pytest.raises(TargetError, match="would destroy"):
        make_plan(parse_task(json.dumps({"version": 1, "target": {"erase": "zero"}})), caps_disk())


def test_an_erase_needs_the_capabilities_in_the_inventory() -> None:
    with pytest.raises(TargetError, match="the inventory has no erase capabilities for it"):
        make_plan(parse_task(json.dumps({"version": 1, "target": {"erase": "metadata"}})), INV)


def test_a_peagent_image_is_named_by_its_manifest() -> None:
    t = parse_task(json.dumps({"version": 1, "image": {"manifest": "images/demo/manifest.json",
                                                       "manifest_sha256": SHA.upper()}}))
    plan = make_plan(t, INV, ("http://dp1/", "http://dp2/"))
    assert plan.image_urls == ("http://dp1/images/demo/manifest.json", "http://dp2/images/demo/manifest.json")
    assert plan.steps()[0] == (f"load the peagent image images/demo/manifest.json, trusted by its pinned sha256 {SHA}; "
                               "refuse it larger than /dev/vda")
    assert plan.to_dict()["image"] == {"manifest": "images/demo/manifest.json", "pin": SHA,
                                       "sources": list(plan.image_urls)}
    with pytest.raises(TaskError) as info:
        parse_task(json.dumps({"version": 1, "image": {"manifest": "m.json", "url": "x"}}))
    assert (info.value.field, info.value.found) == ("image.url", "unknown field")


# In-place re-imaging (target.inplace) ------------------------------------------------------------------------------

OS_DISK = Disk(name="vda", path="/dev/vda", size=8 << 30, transport="virtio", serial="T1", partition_table="gpt",
               partitions=(
                   Partition(number=1, path="/dev/vda1", start=1 << 20, size=512 << 20, fstype="vfat", label="ESP"),
                   Partition(number=2, path="/dev/vda2", start=513 << 20, size=3 << 30, fstype="ext4", label="root",
                             uuid="5e3d0a1c-7a2b-4c6d-9e8f-0d1e2f3a4b5c"),
                   Partition(number=3, path="/dev/vda3", start=4 << 30, size=1 << 30, fstype="swap"),
                   Partition(number=4, path="/dev/vda4", start=5 << 30, size=1 << 30, fstype="ntfs", label="win"),
                   Partition(number=5, path="/dev/vda5", start=6 << 30, size=1 << 30, fstype="xfs"),
                   Partition(number=6, path="/dev/vda6", start=7 << 30, size=512 << 20)))
OS_INV = Inventory(disks=(OS_DISK,), nics=INV.nics)
OS_PARTITIONS = "1 (vfat), 2 (ext4), 3 (swap), 4 (ntfs), 5 (xfs), 6 (no filesystem)"


def inplace_task(inplace: dict[str, object], image: dict[str, object] | None = None):
    return parse_task(json.dumps({"version": 1, "id": "d1", "target": {"inplace": inplace},
                                  "image": image or {"manifest": "images/base/manifest.json",
                                                     "layers": [{"manifest": "images/app/manifest.json"}]}}))


def test_an_inplace_plan_looks_into_every_partition_an_os_lives_on() -> None:
    plan = make_plan(inplace_task({"keep": ["opt/data"]}), OS_INV, ("http://dp1/", "http://dp2/"))
    assert [p.number for p in plan.candidates] == [2, 4, 5]
    assert plan.candidates[0] is OS_DISK.partitions[1]
    assert plan.destroys == ()  # no allow_overwrite needed: the policy decides what goes
    assert plan.image_urls == ("http://dp1/images/base/manifest.json", "http://dp1/images/app/manifest.json")
    stack = "images/base/manifest.json + images/app/manifest.json"
    assert plan.steps() == [
        "look into partition 2 (ext4), 4 (ntfs), 5 (xfs) of /dev/vda, mounted read-only; refuse unless exactly "
        "one holds an OS (Linux or Windows)",
        f"load the file images {stack} (each a file image trusted by its pin or a signature; layers over the base's "
        "tree); refuse before anything is deleted",
        "check that free space plus what the deletion frees holds the new OS with headroom; else refuse",
        "mark the partition (a rerun resumes), then delete the old OS: Linux everything but home, srv, lost+found, "
        "opt/data; Windows Windows, Program Files, Program Files (x86), ProgramData, ... (docs/inplace.md)",
        f"apply {stack} into it, frame by frame verified, kept paths untouched",
        "rewrite etc/fstab for this partition, carrying the old OS's swap and mounts of kept data",
        "find the one OS the image holds and give it a deployment record and a first-boot unit that reports "
        "completion under this deployment id (an image without an OS is left as written)",
        "UEFI: a boot entry named after the image for its loader first in BootOrder, the old OS's entries on /dev/vda "
        "removed; BIOS: check the disk's boot code",
        "reboot",
    ]
    rendered = plan.render()
    assert "overwrites" not in rendered
    assert "  1. look into partition 2 (ext4), 4 (ntfs), 5 (xfs) of /dev/vda" in rendered
    assert "  4. mark the partition (a rerun resumes), then delete the old OS" in rendered
    assert f"  5. apply {stack} into it" in rendered
    doc = json.loads(json.dumps(plan.to_dict()))  # as `peagent plan --json` shows it
    assert doc["destroys"] == []
    assert doc["inplace"] == {"partition": None, "keep": ["opt/data"], "force": False, "headroom": 256 << 20,
                              "candidates": [2, 4, 5]}
    assert doc["image"]["layers"] == [{"manifest": "images/app/manifest.json", "pin": None}]


@pytest.mark.parametrize(("ref", "number"), [({"number": 5}, 5), ({"label": "root"}, 2),
                                             ({"uuid": "5E3D0A1C-7A2B-4C6D-9E8F-0D1E2F3A4B5C"}, 2)])
def test_an_inplace_plan_with_a_named_partition_looks_into_it_alone(ref: dict[str, object], number: int) -> None:
    plan = make_plan(inplace_task({"partition": ref, "force": True}), OS_INV, ("http://dp/",))
    assert [p.number for p in plan.candidates] == [number]
    assert plan.steps()[0].endswith("mounted read-only; refuse unless it holds Linux or Windows, or anything (forced)")
    assert plan.to_dict()["inplace"]["candidates"] == [number]
    assert plan.to_dict()["inplace"]["force"] is True


def test_an_inplace_named_partition_that_is_missing_is_a_task_error() -> None:
    with pytest.raises(TaskError) as info:
        make_plan(inplace_task({"partition": {"label": "nope"}}), OS_INV, ("http://dp/",))
    assert (info.value.field, info.value.expected, info.value.found) == (
        "target.inplace.partition", f"a partition of /dev/vda (partitions: {OS_PARTITIONS})",
        "label 'nope', which it does not have")


@pytest.mark.parametrize(("number", "held"), [(1, "vfat"), (3, "swap"), (6, "no filesystem")])
def test_an_inplace_named_partition_without_an_os_filesystem_is_refused(number: int, held: str) -> None:
    with pytest.raises(InplaceError) as info:
        make_plan(inplace_task({"partition": {"number": number}}), OS_INV, ("http://dp/",))
    assert type(info.value) is InplaceError
    assert str(info.value) == (f"partition {number} of /dev/vda holds {held}: an OS to re-image in place lives on "
                               "ext4, ext3, ext2, xfs, btrfs, ntfs")


def test_an_inplace_plan_on_a_disk_without_an_os_filesystem_is_refused() -> None:
    no_os = Inventory(disks=(replace(OS_DISK, partitions=(OS_DISK.partitions[0], OS_DISK.partitions[2])),))
    with pytest.raises(InplaceError) as info:
        make_plan(inplace_task({}), no_os, ("http://dp/",))
    assert str(info.value) == ("/dev/vda has no partition an OS could live on (ext4, ext3, ext2, xfs, btrfs, ntfs); "
                               "partitions: 1 (vfat), 3 (swap). Nothing to re-image in place")
    with pytest.raises(InplaceError, match=r"; partitions: none\. Nothing to re-image in place$"):
        make_plan(inplace_task({}), INV, ("http://dp/",))


def test_an_inplace_layer_without_dps_is_named_by_its_index() -> None:
    t = inplace_task({}, {"manifest": "http://dp/base/manifest.json", "layers": [{"manifest": "app/manifest.json"}]})
    with pytest.raises(TaskError) as info:
        make_plan(t, OS_INV, ())
    assert (info.value.field, info.value.found) == ("image.layers[0].manifest",
                                                    "the relative path 'app/manifest.json' and no DPs")


def test_kexec_needs_a_linux_image() -> None:
    wim = {"version": 1, "id": "d1", "after": "kexec", "target": {"inplace": {}},
           "image": {"wim": "images/w.wim", "sha256": "0" * 64}}
    with pytest.raises(TaskError, match=r"^after: expected reboot, poweroff or none for a Windows image"):
        parse_task(json.dumps(wim))
    erase_only = {"version": 1, "id": "d1", "after": "kexec", "target": {"erase": "metadata",
                                                                         "allow_overwrite": True}}
    with pytest.raises(TaskError, match="nothing to kexec into"):
        parse_task(json.dumps(erase_only))


def test_the_state_is_resolved_for_this_machine_and_shown_without_secrets() -> None:
    doc = json.loads(json.dumps({"version": 1, "id": "d1", "image": {"manifest": "images/x/manifest.json"},
                                 "state": {"computer_name": "ws-{mac[-4:]}", "admin_password": "Sup3r-s3cret",
                                           "network": [{"mac": "52:54:00:12:34:56", "addresses": ["10.0.0.5/24"],
                                                        "gateway": "10.0.0.1"}],
                                           "migrate": ["timezone"]},
                                 "boot": {"once": True, "label": "WS"}}))
    plan = make_plan(parse_task(json.dumps(doc)), INV, ("http://dp/",))
    text = plan.render() + json.dumps(plan.to_dict())
    assert "Sup3r-s3cret" not in text
    assert ("find the one OS the image holds and give it its state (computer_name ws-3456; admin_password <secret>; "
            "interfaces 52:54:00:12:34:56 10.0.0.5/24 via 10.0.0.1; from the old OS: timezone)") in text
    assert "UEFI: a boot entry 'WS' for its loader as a one-time boot (BootNext)" in text
    assert "capture the old OS's state from /dev/vda's partitions (mounted read-only) before anything is written: " \
           "timezone" in text
    assert plan.to_dict()["state"]["admin_password"] == "<secret>"


def test_a_computer_name_windows_would_refuse_is_a_warning_when_the_os_is_not_known() -> None:
    doc = {"version": 1, "id": "d1", "image": {"manifest": "images/x/manifest.json"},
           "state": {"computer_name": "workstation-0-{serial}"}}
    plan = make_plan(parse_task(json.dumps(doc)), INV, ("http://dp/",))
    assert plan.warnings == ("state.computer_name 'workstation-0-SN1' would be refused by a Windows image (more than 15 "
                             "characters)",)
    doc["state"]["os"] = "windows"
    with pytest.raises(TaskError, match="Windows computer name"):
        make_plan(parse_task(json.dumps(doc)), INV, ("http://dp/",))


def test_a_task_with_drivers_loads_the_index_first_and_injects_before_the_state() -> None:
    doc = {"version": 1, "id": "d1", "image": {"manifest": "images/x/manifest.json"},
           "drivers": {"index": "drivers/index.json", "required": True}}
    steps = make_plan(parse_task(json.dumps(doc)), INV, ("http://dp/",)).steps()
    assert steps[0] == ("load the driver store's index drivers/index.json, trusted by a trusted key's signature; "
                        "refuse before anything is written")
    assert steps[3].startswith("match this machine's devices against the driver index (make/model group first, then "
                               "Windows' ranking or Linux modaliases; every device must get one)")
    assert steps[3].endswith("then find the one OS the image holds and give it a deployment record and a first-boot "
                             "unit that reports completion under this deployment id (an image without an OS is left "
                             "as written)")
