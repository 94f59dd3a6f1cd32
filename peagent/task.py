"""The task document: what to do to a machine, validated before anything happens.

A task is a small, versioned JSON document, usually served by a distribution point (DP)::

    {
      "version": 1,
      "id": "wave-42-ws0042",                       # deployment id (generated when absent)
      "machine": {"mac": "52:54:00:12:34:56"},      # optional: refuse to run on another machine
      "dps": ["http://dp1.example.com/"],           # optional: else the PE's peagent.dp
      "target": {"hints": {"serial": "S3Z9NB0K"},   # optional: which disk (see peagent.hints)
                 "allow_overwrite": false,           # destroying data found on it is refused unless true
                 "erase": "zero",                    # optional: metadata|discard|zero|secure first
                 "partitions": {...},                # optional: a layout (peagent.disk.layout)
                 "inplace": {...}},                  # optional: re-image the OS partition in place
      "image": {"manifest": "images/ws/manifest.json",  # a peagent image (docs/image-format.md),
                "manifest_sha256": "<64 hex digits>",   # pinned (optional: else it must be signed)
                "layers": [{"manifest": ...}, ...]},    # with inplace: file image layers over the base
      "state": {...},                                # optional: who the new OS is (peagent.state.spec)
      "skip_if_deployed": false,                     # true: do nothing when the disk's deployment
                                                     #   record shows this very image (peagent.state.record)
      "boot": {"once": false, "label": "Debian"},    # optional: the UEFI entry (peagent.boot)
      "drivers": {"index": "drivers/index.json",     # optional: inject matched drivers (peagent.drivers)
                  "required": false},
      "status": {"url": "http://dp/api/v1/events",   # optional: where status events go (else the PE's
                 "token": "<16+ characters>"},       #   peagent.status=), and the bearer token (docs/status.md)
      "after": "reboot"                              # "reboot", "poweroff", "kexec" or "none"
    }

With ``target.inplace`` (peagent.inplace.spec) the image is a file image (kind files) and its
layers, applied into the partition that held the old OS once the old OS is deleted, the user's
data kept; or, for Windows, a WIM: ``"image": {"wim": "images/w11/install.wim", "sha256": ...,
"index": 1, "refs": [{"wim": ..., "sha256": ...}]}`` (docs/inplace.md).

A third-party image file is named instead by ``"image": {"url": "images/ws.img.zst", "sha256": ...}``
(relative to a DP or absolute; its sha256, or a ``checksum_url`` listing it, or a ``bmap`` with range
checksums proves it; ``size``, ``compression`` (auto, none, gzip, xz, bzip2, zstd: by default the
suffix's, else the data's magic bytes) are optional: docs/third-party-images.md).

A task deploys a whole-disk image, or prepares the disk with a partition layout (not both: the image
brings its own partition table). :func:`parse_task` turns text into a :class:`Task` or raises
:class:`~peagent.errors.TaskError` naming the field (as a dotted path), what was expected and what
was found. Unknown fields are errors too, with a suggestion when the name looks like a typo: a
misspelt safety setting must never be silently ignored.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from peagent.disk.erase import EraseSpec, parse_erase
from peagent.disk.layout import LayoutSpec, parse_layout
from peagent.errors import TaskError, describe
from peagent.hints import Hints, parse_hints
from peagent.image.compression import suffix_hint
from peagent.image.job import FilesSource, ImageSource, ManifestSource, WimFile, WimSource
from peagent.image.thirdparty import StreamSource
from peagent.inplace.spec import InplaceSpec, parse_inplace
from peagent.schema import Fields
from peagent.state.model import Secret
from peagent.state.spec import StateSpec, parse_state

T = TypeVar("T")
TASK_VERSION = 1
AFTER_ACTIONS = ("reboot", "poweroff", "kexec", "none")
COMPRESSIONS = ("auto", "none", "gzip", "xz", "bzip2", "zstd")

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_MAC = re.compile(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}")
# At most 64: a status event's deployment_id (docs/status.md) must hold it.
_DEPLOYMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# A bearer token goes into an HTTP header: printable ASCII without spaces.
_TOKEN = re.compile(r"[\x21-\x7e]+")
TOKEN_MIN = 16
TOKEN_MAX = 512


@dataclass(frozen=True)
class MachineMatch:
    """Identity a task is meant for; every given field must match this machine."""

    mac: str | None = None
    uuid: str | None = None
    serial: str | None = None

    def is_empty(self) -> bool:
        return self.mac is None and self.uuid is None and self.serial is None


@dataclass(frozen=True)
class TargetSpec:
    hints: Hints
    allow_overwrite: bool = False
    erase: EraseSpec | None = None  # erase the disk first (peagent.disk.erase)
    partitions: LayoutSpec | None = None  # a layout to create (peagent.disk.layout)
    inplace: InplaceSpec | None = None  # re-image the OS partition in place (peagent.inplace)


@dataclass(frozen=True)
class BootSpec:
    """The new OS's UEFI boot entry: a one-time boot (BootNext) or first in BootOrder; its label."""

    once: bool = False
    label: str | None = None  # default: the image's name


@dataclass(frozen=True)
class DriversSpec:
    """Where the driver store's index is, and what to do about devices without a driver."""

    index: str  # URL or DP path of index.json (the packages are beside it)
    index_sha256: str | None = None  # a pin, instead of the index's signature
    required: bool = False  # true: a device of this machine without a driver is an error
    windows_label: str | None = None  # the store's <os> folder for this Windows (default: from its version)


@dataclass(frozen=True)
class StatusSpec:
    """Where the deployment's status events go, and the bearer token that proves they are this deployment's."""

    url: str | None = None  # None: the PE's peagent.status=
    token: Secret | None = None  # never shown: its repr is a placeholder


@dataclass(frozen=True)
class Task:
    version: int
    deployment_id: str
    machine: MachineMatch
    dps: tuple[str, ...]
    target: TargetSpec
    image: ImageSource | FilesSource | WimSource | None  # None: the task only prepares the disk
    after: str
    state: StateSpec | None = None
    skip_if_deployed: bool = False
    boot: BootSpec = field(default_factory=BootSpec)
    drivers: DriversSpec | None = None
    status: StatusSpec = field(default_factory=StatusSpec)


def parse_task(text: str | bytes) -> Task:
    """Parse and validate a task document; raise TaskError on the first problem."""
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise TaskError("task", "a JSON document", f"invalid JSON{where}: {exc}") from None
    top = Fields(doc, "task")
    version = top.get("version", int, f"the task format version, {TASK_VERSION}")
    if version != TASK_VERSION:
        raise TaskError("version", f"{TASK_VERSION} (the version this agent reads)", describe(version))
    deployment_id = top.get("id", str, "a deployment id of letters, digits and ._:-", None)
    if deployment_id is None:
        deployment_id = uuid.uuid4().hex
    elif not _DEPLOYMENT_ID.fullmatch(deployment_id):
        raise TaskError("id", "1-64 letters, digits and ._:- starting with a letter or digit",
                        describe(deployment_id))
    target = _target(top.get("target", dict, "an object with hints and allow_overwrite", {}))
    task = Task(
        version=version,
        deployment_id=deployment_id,
        machine=_machine(top.get("machine", dict, "an object with mac, uuid or serial", {})),
        dps=_dps(top.get("dps", list, "a list of http(s) URLs", []), "dps"),
        target=target,
        image=_image(top.get("image", dict, "an object with url and sha256", None), files=target.inplace is not None),
        after=top.get("after", str, f"one of {', '.join(AFTER_ACTIONS)}", "reboot"),
        state=_state(top.get("state", dict, "an object: computer_name, network, migrate, ...", None)),
        skip_if_deployed=top.get("skip_if_deployed", bool, "true or false", False),
        boot=_boot(top.get("boot", dict, "an object with once and label", {})),
        drivers=_drivers(top.get("drivers", dict, "an object with index (the driver store's index.json)", None)),
        status=_status(top.get("status", dict, "an object with url and token", {})),
    )
    if task.after not in AFTER_ACTIONS:
        raise TaskError("after", f"one of {', '.join(AFTER_ACTIONS)}", describe(task.after))
    top.done()
    _check_work(task)
    return task


def check_sha256(value: str, field: str) -> str:
    """A sha256 in hex (64 digits, any case), lower-cased; TaskError naming the field otherwise."""
    if not _SHA256.fullmatch(value):
        raise TaskError(field, "64 hex digits (a sha256)", describe(value))
    return value.lower()


def _check_work(task: Task) -> None:
    """A task must do something, and its parts must not contradict each other."""
    target = task.target
    if target.inplace is not None:
        if task.image is None:
            raise TaskError("image", "the file image to lay down in place (with target.inplace)", "nothing")
        for name in ("partitions", "erase"):
            if getattr(target, name) is not None:
                raise TaskError(f"target.{name}", f"no {name} with target.inplace (an in-place re-image keeps the "
                                "disk's partitions and their data)", f"target.{name}")
    if task.after == "kexec" and (isinstance(task.image, WimSource) or (task.state and task.state.os == "windows")):
        raise TaskError("after", "reboot, poweroff or none for a Windows image (kexec starts a Linux kernel)", "kexec")
    if task.after == "kexec" and task.image is None:
        raise TaskError("after", "reboot, poweroff or none when no image is written (nothing to kexec into)", "kexec")
    if task.image is None and target.partitions is None and target.erase is None:
        raise TaskError("image", "an image to deploy, or target.erase or target.partitions to prepare the "
                        "disk", "none of them")
    if target.erase is not None and target.partitions is not None and target.partitions.keep:
        raise TaskError("target.erase", "no erase when target.partitions keeps partitions (an erase "
                        "destroys them)", f"erase mode {target.erase.mode!r}")
    if task.image is not None and task.target.partitions is not None:
        raise TaskError("target.partitions", "no layout with a whole-disk image (the image brings its own "
                        "partition table)", "a layout")


def _state(obj: dict | None) -> StateSpec | None:
    return None if obj is None else parse_state(obj, "state")


def _status(obj: dict) -> StatusSpec:
    f = Fields(obj, "status")
    url = f.get("url", (str, type(None)), "the http(s) URL status events are posted to, or null", None)
    if url is not None:
        check_http_url(url, "status.url")
    # Read as any type: the type check of Fields.get would print the value, and this one is a secret. Null: none.
    token = f.get("token", object, f"a bearer token of {TOKEN_MIN}-{TOKEN_MAX} printable characters", None)
    f.done()
    return StatusSpec(url=url, token=None if token is None else _token(token))


def _token(value: object) -> Secret:
    """The status token as a Secret; an error says what is wrong with it, never what it is."""
    expected = f"a bearer token of {TOKEN_MIN}-{TOKEN_MAX} printable ASCII characters without spaces"
    if not isinstance(value, str):
        raise TaskError("status.token", expected, _json_type(value))
    if len(value) < TOKEN_MIN:
        raise TaskError("status.token", expected, f"{len(value)} characters (too short to be hard to guess)")
    if len(value) > TOKEN_MAX:
        raise TaskError("status.token", expected, f"{len(value)} characters")
    if not _TOKEN.fullmatch(value):
        raise TaskError("status.token", expected, "a space, a control or a non-ASCII character")
    return Secret(value)


def _json_type(value: object) -> str:
    """A value's JSON type, for an error about a field whose value must not be shown."""
    if value is None:
        return "null"
    kinds = ((bool, "a boolean"), (int | float, "a number"), (dict, "an object"), (list, "a list"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "a string")


def _drivers(obj: dict | None) -> DriversSpec | None:
    if obj is None:
        return None
    f = Fields(obj, "drivers")
    index = _ref(f.get("index", str, "the driver index's URL or DP path (drivers/index.json)"), "drivers.index")
    assert index is not None
    pin = f.get("index_sha256", str, "the index's sha256, 64 hex digits", None)
    required = f.get("required", bool, "true or false (whether every device must get a driver)", False)
    label = f.get("windows_label", str, "the store's <os> folder name for this Windows (win10, win11, ...)", None)
    f.done()
    return DriversSpec(index=index, index_sha256=None if pin is None else check_sha256(pin, "drivers.index_sha256"),
                       required=required, windows_label=label)


def _boot(obj: object) -> BootSpec:
    f = Fields(obj, "boot")
    once = f.get("once", bool, "true or false (a one-time boot with BootNext)", False)
    label = f.get("label", str, "the UEFI boot entry's label", None)
    if label is not None and not re.fullmatch(r"[\x20-\x7e]{1,64}", label):
        raise TaskError("boot.label", "1-64 printable ASCII characters", describe(label))
    f.done()
    return BootSpec(once=once, label=label)


def _machine(obj: object) -> MachineMatch:
    f = Fields(obj, "machine")
    mac = f.get("mac", str, "a MAC address like 52:54:00:12:34:56", None)
    if mac is not None:
        if not _MAC.fullmatch(mac):
            raise TaskError("machine.mac", "a MAC address like 52:54:00:12:34:56", describe(mac))
        mac = mac.lower().replace("-", ":")
    machine_uuid = f.get("uuid", str, "an SMBIOS UUID", None)
    if machine_uuid is not None:
        try:
            machine_uuid = str(uuid.UUID(machine_uuid))
        except ValueError:
            raise TaskError("machine.uuid", "an SMBIOS UUID like 4c4c4544-0042-...",
                            describe(machine_uuid)) from None
    serial = f.get("serial", str, "the machine's serial number", None)
    f.done()
    return MachineMatch(mac=mac, uuid=machine_uuid, serial=serial)


def _dps(items: list[object], field: str) -> tuple[str, ...]:
    return tuple(check_http_url(item, f"{field}[{i}]") for i, item in enumerate(items))


def check_http_url(value: object, field: str) -> str:
    """Validate an http(s) URL, returning it; used for task fields and boot parameters alike."""
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
        raise TaskError(field, "an http:// or https:// URL", describe(value))
    return value


def _target(obj: object) -> TargetSpec:
    f = Fields(obj, "target")
    hints = parse_hints(f.get("hints", dict, "an object of root-device hints", {}), "target.hints")
    allow = f.get("allow_overwrite", bool, "true or false", False)
    erase = f.get("erase", (str, dict), "an erase mode or an object with mode, method, samples", None)
    layout = f.get("partitions", dict, "a partition layout (table, keep, create)", None)
    inplace = f.get("inplace", dict, "an object with partition, keep and force", None)
    f.done()
    return TargetSpec(hints=hints, allow_overwrite=allow,
                      erase=None if erase is None else parse_erase(erase, "target.erase"),
                      partitions=None if layout is None else parse_layout(layout, "target.partitions"),
                      inplace=None if inplace is None else parse_inplace(inplace, "target.inplace"))


def _image(obj: object, *, files: bool) -> ImageSource | FilesSource | WimSource | None:
    if obj is None:
        return None
    if files:
        return _files_image(obj)
    if isinstance(obj, dict) and "manifest" in obj:
        return _manifest_image(obj)
    f = Fields(obj, "image")
    url = _ref(f.get("url", str, "the image's URL or its path on the DPs (or image.manifest for a peagent "
                     "image)"), "image.url")
    assert url is not None
    proof = "the sha256 of the raw image, 64 hex digits (or image.checksum_url, or image.bmap)"
    sha256 = f.get("sha256", str, proof, None)
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        raise TaskError("image.sha256", "64 hex digits (the sha256 of the raw image)", describe(sha256))
    checksum_url = _ref(f.get("checksum_url", str, "the URL or DP path of a checksum file (SHA256SUMS)", None),
                        "image.checksum_url")
    bmap_given = "bmap" in f.obj
    bmap = f.get("bmap", (str, type(None)), 'a bmap\'s URL or DP path, "auto" or null', "auto")
    if bmap == "none":
        bmap = None
    elif bmap not in (None, "auto"):
        bmap = _ref(bmap, "image.bmap")
    if sha256 is None and checksum_url is None and not (bmap_given and bmap is not None):
        # A bmap found by chance proves nothing the task asked for; one named in the task does.
        raise TaskError("image.sha256", proof, "nothing (the field is required)")
    size = f.get("size", int, "the raw image size in bytes, a positive integer", None)
    if size is not None and size <= 0:
        raise TaskError("image.size", "a positive number of bytes", describe(size))
    # The suffix's compression when it names a supported one (the data must agree), else auto.
    hint = suffix_hint(urlsplit(url).path)
    default_compression = hint[1] if hint and hint[1] in COMPRESSIONS else "auto"
    compression = f.get("compression", str, f"one of {', '.join(COMPRESSIONS)}", default_compression)
    if compression not in COMPRESSIONS:
        raise TaskError("image.compression", f"one of {', '.join(COMPRESSIONS)}", describe(compression))
    f.done()
    return StreamSource(url=url, sha256=sha256.lower() if sha256 else None, size=size, compression=compression,
                        checksum_url=checksum_url, bmap=bmap)


def _manifest_image(obj: dict) -> ManifestSource:
    f = Fields(obj, "image")
    if "layers" in obj:
        raise TaskError("image.layers", "no layers here: layers are applied into a filesystem, with "
                        "target.inplace", "image.layers with a whole-disk image")
    source = _manifest_fields(f, "image")
    f.done()
    return source


def _files_image(obj: object) -> FilesSource | WimSource:
    if isinstance(obj, dict) and "wim" in obj:
        return _wim_image(obj)
    f = Fields(obj, "image")
    if "url" in f.obj and "manifest" not in f.obj:
        raise TaskError("image.manifest", "a peagent file image's manifest (target.inplace lays down file images, "
                        "not image files)", "image.url")
    base = _manifest_fields(f, "image")
    layers = f.get("layers", list, 'a list of layer images, each {"manifest": ..., "manifest_sha256": ...}', [])
    devices = f.get("allow_devices", bool, "true or false (whether the images may carry device nodes)", False)
    f.done()
    return FilesSource(base=base, layers=_each(layers, "image.layers", _manifest_fields), allow_devices=devices)


def _wim_image(obj: dict) -> WimSource:
    f = Fields(obj, "image")
    wim = _wim_file(f, "image")
    index = f.get("index", int, "the image's index in the WIM, 1 or more (wiminfo lists them)", 1)
    if index < 1:
        raise TaskError("image.index", "the image's index in the WIM, 1 or more", describe(index))
    refs = f.get("refs", list, 'the split parts or delta bases, each {"wim": ..., "sha256": ...}', [])
    f.done()
    return WimSource(wim=wim, index=index, refs=_each(refs, "image.refs", _wim_file))


def _each(items: list[object], field: str, parse: Callable[[Fields, str], T]) -> tuple[T, ...]:
    """Each object of a list read by ``parse``, its unknown fields refused (``field[i].name``)."""
    parsed = []
    for i, item in enumerate(items):
        fields = Fields(item, f"{field}[{i}]")
        parsed.append(parse(fields, f"{field}[{i}]"))
        fields.done()
    return tuple(parsed)


def _wim_file(f: Fields, field: str) -> WimFile:
    url = _ref(f.get("wim", str, "the WIM's URL or its path on the DPs"), f"{field}.wim")
    assert url is not None
    sha256 = f.get("sha256", str, "the WIM's sha256, 64 hex digits (every byte is verified)")
    return WimFile(url=url, sha256=check_sha256(sha256, f"{field}.sha256"))


def _manifest_fields(f: Fields, field: str) -> ManifestSource:
    manifest = _ref(f.get("manifest", str, "the manifest's URL or DP path"), f"{field}.manifest")
    assert manifest is not None
    pin = f.get("manifest_sha256", str, "the manifest's sha256, 64 hex digits", None)
    if pin is not None and not _SHA256.fullmatch(pin):
        raise TaskError(f"{field}.manifest_sha256", "64 hex digits (the sha256 of manifest.json)", describe(pin))
    return ManifestSource(manifest=manifest, pin=pin.lower() if pin else None)


def _ref(value: str | None, field: str) -> str | None:
    """A URL or DP path, as image.url: no spaces; http(s) when absolute."""
    if value is None:
        return None
    if not value or any(c.isspace() for c in value):
        raise TaskError(field, "a URL or a path without spaces", describe(value))
    if "://" in value:
        check_http_url(value, field)
    return value
