"""target.inplace and the file image it lays down, parsed through the task (peagent.task.parse_task)."""

from __future__ import annotations

import json

import pytest

from peagent.disk.layout.spec import Keep
from peagent.errors import TaskError
from peagent.image.job import FilesSource, ManifestSource, WimFile, WimSource
from peagent.inplace.spec import HEADROOM, InplaceSpec
from peagent.task import Task, parse_task

SHA = "c" * 64
BASE = {"manifest": "images/base/manifest.json"}
KEEP_EXPECTED = 'a path relative to the partition\'s root, like "opt/data" (no "..", no NUL)'


def doc(inplace: object = None, image: object = BASE, **target: object) -> str:
    t: dict[str, object] = dict(target)
    if inplace is not None:
        t["inplace"] = inplace
    d: dict[str, object] = {"version": 1, "id": "d1", "target": t}
    if image is not None:
        d["image"] = image
    return json.dumps(d)


def parse(inplace: object = None, image: object = BASE, **target: object) -> Task:
    return parse_task(doc(inplace, image, **target))


def error(text: str) -> TaskError:
    with pytest.raises(TaskError) as info:
        parse_task(text)
    return info.value


def test_defaults() -> None:
    t = parse({})
    assert t.target.inplace == InplaceSpec(partition=None, keep=(), force=False, headroom=HEADROOM)
    assert HEADROOM == 256 << 20
    assert t.image == FilesSource(base=ManifestSource(manifest="images/base/manifest.json", pin=None), layers=())
    assert t.target.allow_overwrite is False


@pytest.mark.parametrize(("given", "normalised"), [
    ("/opt/data/", "opt/data"),
    ("opt/data", "opt/data"),
    ("./var//lib/./pgsql/", "var/lib/pgsql"),
    ("home", "home"),
])
def test_keeps_are_normalised(given: str, normalised: str) -> None:
    assert parse({"keep": ["srv", given]}).target.inplace.keep == ("srv", normalised)


@pytest.mark.parametrize(("bad", "found"), [
    ("..", '".."'),
    ("opt/../etc", '"opt/../etc"'),
    ("", '""'),
    ("/", '"/"'),
    ("./.", '"./."'),
    ("a\0b", '"a\\u0000b"'),
    (5, "5"),
    (None, "null"),
])
def test_bad_keeps_are_refused_naming_the_item(bad: object, found: str) -> None:
    exc = error(doc({"keep": ["opt/data", bad]}))
    assert (exc.field, exc.expected, exc.found) == ("target.inplace.keep[1]", KEEP_EXPECTED, found)


def test_keep_must_be_a_list() -> None:
    exc = error(doc({"keep": "opt/data"}))
    assert exc.field == "target.inplace.keep"
    assert exc.found == '"opt/data"'


def test_force_needs_a_named_partition() -> None:
    exc = error(doc({"force": True}))
    assert (exc.field, exc.found) == ("target.inplace.partition", "nothing")
    assert "force applies to a named partition only" in exc.expected
    spec = parse({"force": True, "partition": {"number": 2}}).target.inplace
    assert spec.force is True and spec.partition == Keep(index=0, key="number", value=2)


def test_headroom_in_binary_units() -> None:
    assert parse({"headroom": "8MiB"}).target.inplace.headroom == 8 << 20
    assert parse({"headroom": "1GiB"}).target.inplace.headroom == 1 << 30


@pytest.mark.parametrize(("bad", "found"), [
    ("10%", '"10%"'),
    ("fill", '"fill"'),
    ("1GB", '"1GB" (write binary units: MiB, GiB or TiB)'),
    ("0MiB", '"0MiB"'),
    (268435456, "268435456"),
])
def test_headroom_that_is_not_a_byte_size_is_refused(bad: object, found: str) -> None:
    exc = error(doc({"headroom": bad}))
    assert exc.field == "target.inplace.headroom"
    assert exc.found == found


@pytest.mark.parametrize(("ref", "keep"), [
    ({"number": 3}, Keep(index=0, key="number", value=3)),
    ({"label": "root"}, Keep(index=0, key="label", value="root")),
    ({"uuid": "5E3D0A1C-7A2B-4C6D-9E8F-0D1E2F3A4B5C"},
     Keep(index=0, key="uuid", value="5E3D0A1C-7A2B-4C6D-9E8F-0D1E2F3A4B5C")),
])
def test_partition_refs(ref: dict, keep: Keep) -> None:
    assert parse({"partition": ref}).target.inplace.partition == keep


@pytest.mark.parametrize(("ref", "field", "found"), [
    ({}, "target.inplace.partition", "none of them"),
    ({"number": 1, "label": "root"}, "target.inplace.partition", "number and label"),
    ({"number": 0}, "target.inplace.partition.number", "0"),
    ({"label": ""}, "target.inplace.partition.label", '""'),
    ({"name": "root"}, "target.inplace.partition.name", "unknown field (did you mean 'number'?)"),
    ("root", "target.inplace.partition", '"root"'),
])
def test_bad_partition_refs_are_refused(ref: object, field: str, found: str) -> None:
    exc = error(doc({"partition": ref}))
    assert (exc.field, exc.found) == (field, found)


def test_unknown_inplace_field_is_refused_with_a_suggestion() -> None:
    exc = error(doc({"kep": ["opt/data"]}))
    assert exc.field == "target.inplace.kep"
    assert exc.found == "unknown field (did you mean 'keep'?)"


def test_inplace_with_a_layout_or_an_erase_is_refused() -> None:
    layout = {"table": "gpt", "create": [{"role": "esp", "size": "512MiB"}]}
    exc = error(doc({}, partitions=layout))
    assert (exc.field, exc.found) == ("target.partitions", "target.partitions")
    assert "no partitions with target.inplace" in exc.expected
    exc = error(doc({}, erase="zero"))
    assert (exc.field, exc.found) == ("target.erase", "target.erase")
    assert "no erase with target.inplace" in exc.expected


def test_inplace_without_an_image_is_refused() -> None:
    assert error(doc({}, image=None)).field == "image"
    # With an erase as well, the in-place check is the one that speaks.
    exc = error(doc({}, image=None, erase="zero"))
    assert (exc.field, exc.expected, exc.found) == (
        "image", "the file image to lay down in place (with target.inplace)", "nothing")


def test_an_image_file_url_with_inplace_is_refused() -> None:
    exc = error(doc({}, image={"url": "images/x.img.zst", "sha256": SHA}))
    assert (exc.field, exc.found) == ("image.manifest", "image.url")
    assert "target.inplace lays down file images" in exc.expected
    exc = error(doc({}, image={"manifest": "m.json", "url": "x.img"}))
    assert (exc.field, exc.found) == ("image.url", "unknown field")


def test_layers_without_inplace_are_refused() -> None:
    exc = error(doc(None, image={"manifest": "m.json", "layers": [{"manifest": "l.json"}]}))
    assert (exc.field, exc.found) == ("image.layers", "image.layers with a whole-disk image")


def test_layers_are_parsed_in_order_with_their_pins() -> None:
    image = parse({}, image={"manifest": "images/base/manifest.json", "manifest_sha256": SHA.upper(),
                             "layers": [{"manifest": "images/app/manifest.json", "manifest_sha256": SHA},
                                        {"manifest": "http://dp/images/tools/manifest.json"}]}).image
    assert isinstance(image, FilesSource)
    assert image.base == ManifestSource(manifest="images/base/manifest.json", pin=SHA)
    assert image.layers == (ManifestSource(manifest="images/app/manifest.json", pin=SHA),
                            ManifestSource(manifest="http://dp/images/tools/manifest.json", pin=None))
    assert [s.manifest for s in image.all] == ["images/base/manifest.json", "images/app/manifest.json",
                                               "http://dp/images/tools/manifest.json"]


@pytest.mark.parametrize(("layers", "field", "found"), [
    ([{"manifest": "l.json", "x": 1}], "image.layers[0].x", "unknown field"),
    ([{"manifest": "l.json"}, {"manifest": "l2.json", "pin": SHA}], "image.layers[1].pin", "unknown field"),
    (["l.json"], "image.layers[0]", '"l.json"'),
    ([{"manifest_sha256": SHA}], "image.layers[0].manifest", "nothing (the field is required)"),
    ([{"manifest": "l.json", "manifest_sha256": "abc"}], "image.layers[0].manifest_sha256", '"abc"'),
    ([{"manifest": "a b.json"}], "image.layers[0].manifest", '"a b.json"'),
    ({"manifest": "l.json"}, "image.layers", "an object"),
])
def test_bad_layers_are_refused_with_their_dotted_path(layers: object, field: str, found: str) -> None:
    exc = error(doc({}, image={"manifest": "m.json", "layers": layers}))
    assert exc.field == field
    assert exc.found.startswith(found)


def test_a_wim_with_its_index_and_refs() -> None:
    image = {"wim": "images/w/install.swm", "sha256": "A" * 64, "index": 6,
             "refs": [{"wim": "images/w/install2.swm", "sha256": SHA}]}
    task = parse({}, image)
    assert task.image == WimSource(wim=WimFile("images/w/install.swm", "a" * 64), index=6,
                                   refs=(WimFile("images/w/install2.swm", SHA),))
    assert parse({}, {"wim": "http://dp/x.wim", "sha256": SHA}).image == WimSource(WimFile("http://dp/x.wim", SHA), 1)


@pytest.mark.parametrize(("image", "field", "found"), [
    ({"wim": "x.wim"}, "image.sha256", "nothing (the field is required)"),
    ({"wim": "x.wim", "sha256": "abc"}, "image.sha256", '"abc"'),
    ({"wim": "x.wim", "sha256": SHA, "index": 0}, "image.index", "0"),
    ({"wim": "x.wim", "sha256": SHA, "refs": [{"wim": "y.dwm"}]}, "image.refs[0].sha256",
     "nothing (the field is required)"),
    ({"wim": "x.wim", "sha256": SHA, "refs": [{"wim": "y.dwm", "sha256": SHA, "url": "z"}]}, "image.refs[0].url",
     "unknown field"),
    ({"wim": "x y.wim", "sha256": SHA}, "image.wim", '"x y.wim"'),
])
def test_bad_wims_are_refused_naming_the_field(image: dict, field: str, found: str) -> None:
    e = error(doc({}, image))
    assert e.field == field and e.found.startswith(found)


def test_device_nodes_only_when_the_task_trusts_the_images_with_them() -> None:
    assert parse({}).image.allow_devices is False  # type: ignore[union-attr]
    assert parse({}, {**BASE, "allow_devices": True}).image.allow_devices is True  # type: ignore[union-attr]
    e = error(doc({}, {**BASE, "allow_devices": "yes"}))
    assert e.field == "image.allow_devices" and e.found == '"yes"'
