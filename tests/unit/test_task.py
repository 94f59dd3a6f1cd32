from __future__ import annotations

import json

import pytest

from peagent.errors import TaskError
from peagent.task import parse_task

SHA = "a" * 64


def task(**overrides: object) -> str:
    doc: dict[str, object] = {"version": 1, "image": {"url": "images/x.img.zst", "sha256": SHA}}
    doc.update(overrides)
    return json.dumps(doc)


def error(text: str | bytes) -> TaskError:
    with pytest.raises(TaskError) as info:
        parse_task(text)
    return info.value


def test_minimal_task_gets_defaults() -> None:
    t = parse_task(task())
    assert t.image.compression == "zstd"  # from the suffix
    assert t.image.size is None
    assert t.image.checksum_url is None and t.image.bmap == "auto"
    assert t.after == "reboot"
    assert t.target.allow_overwrite is False
    assert not t.target.hints
    assert t.machine.is_empty()
    assert len(t.deployment_id) == 32


def test_full_task_is_normalised() -> None:
    t = parse_task(task(
        id="wave-1:ws42", machine={"mac": "52-54-00-AB-CD-EF", "uuid": "4C4C4544-0042-3010-8048-B4C04F4E3232"},
        dps=["http://dp1/", "https://dp2:8443/x"], after="poweroff",
        target={"hints": {"serial": "S1", "size": 64}, "allow_overwrite": True},
        image={"url": "http://dp/raw.img", "sha256": SHA.upper(), "size": 4096},
    ))
    assert t.deployment_id == "wave-1:ws42"
    assert t.machine.mac == "52:54:00:ab:cd:ef"
    assert t.machine.uuid == "4c4c4544-0042-3010-8048-b4c04f4e3232"
    assert t.dps == ("http://dp1/", "https://dp2:8443/x")
    assert t.image.compression == "auto" and t.image.sha256 == SHA and t.image.size == 4096  # .img: the data decides
    assert t.target.hints.describe() == "serial s== 'S1', size == 64"


@pytest.mark.parametrize(("text", "field", "expected", "found"), [
    ("{", "task", "a JSON document", "invalid JSON at line 1 column 2"),
    ("[]", "task", "an object", "a list of 0 items"),
    (task(version=2), "version", "1 (the version this agent reads)", "2"),
    (json.dumps({"image": {}}), "version", "the task format version, 1", "nothing (the field is required)"),
    (task(version=True), "version", "the task format version, 1", "true (a boolean)"),
    (task(image={"url": "x"}), "image.sha256",
     "the sha256 of the raw image, 64 hex digits (or image.checksum_url, or image.bmap)",
     "nothing (the field is required)"),
    (task(image={"url": "x", "bmap": None}), "image.sha256",
     "the sha256 of the raw image, 64 hex digits (or image.checksum_url, or image.bmap)",
     "nothing (the field is required)"),
    (task(image={"url": "x", "checksum_url": "ftp://h/SUMS"}), "image.checksum_url", "an http:// or https:// URL",
     '"ftp://h/SUMS"'),
    (task(image={"url": "x", "sha256": SHA, "bmap": "a b.bmap"}), "image.bmap", "a URL or a path without spaces",
     '"a b.bmap"'),
    (task(image={"url": "x", "sha256": SHA, "bmap": False}), "image.bmap", 'a bmap\'s URL or DP path, "auto" or null',
     "false (a boolean)"),
    (task(image={"url": "x", "sha256": "abc"}), "image.sha256", "64 hex digits (the sha256 of the raw image)",
     '"abc"'),
    (task(image={"url": "x", "sha256": SHA, "size": 0}), "image.size", "a positive number of bytes", "0"),
    (task(image={"url": "x y", "sha256": SHA}), "image.url", "a URL or a path without spaces", '"x y"'),
    (task(image={"url": "ftp://h/x", "sha256": SHA}), "image.url", "an http:// or https:// URL", '"ftp://h/x"'),
    (task(image={"url": "x", "sha256": SHA, "compression": "lz4"}), "image.compression",
     "one of auto, none, gzip, xz, bzip2, zstd", '"lz4"'),
    (task(after="halt"), "after", "one of reboot, poweroff, kexec, none", '"halt"'),
    (task(dps=["dp1"]), "dps[0]", "an http:// or https:// URL", '"dp1"'),
    (task(dps="http://dp1"), "dps", "a list of http(s) URLs", '"http://dp1"'),
    (task(machine={"mac": "52:54:00"}), "machine.mac", "a MAC address like 52:54:00:12:34:56", '"52:54:00"'),
    (task(machine={"uuid": "nope"}), "machine.uuid", "an SMBIOS UUID like 4c4c4544-0042-...", '"nope"'),
    (task(id="-bad"), "id", "1-64 letters, digits and ._:- starting with a letter or digit", '"-bad"'),
    (task(target={"allow_overwrite": "yes"}), "target.allow_overwrite", "true or false", '"yes"'),
    (task(target={"hints": {"colour": "red"}}), "target.hints.colour",
     "a hint key, one of size, model, vendor, serial, wwn, wwn_with_extension, wwn_vendor_extension, "
     "name, rotational, hctl, by_path", "an unknown key"),
    (task(target={"hints": {"size": 64.5}}), "target.hints.size",
     'a size in GiB: a whole number above 0, or a string like ">= 100"', "64.5"),
    (task(target={"hints": {"rotational": 1}}), "target.hints.rotational", "true or false", "1"),
])
def test_invalid_tasks_name_field_expectation_and_finding(text, field, expected, found) -> None:
    exc = error(text)
    assert (exc.field, exc.expected) == (field, expected)
    assert exc.found.startswith(found)
    assert str(exc) == f"{field}: expected {expected}, found {exc.found}"


def test_third_party_image_fields() -> None:
    doc = {"url": "http://dp/debian.raw.xz", "checksum_url": "http://dp/SHA512SUMS", "compression": "xz",
           "bmap": "http://dp/debian.raw.bmap"}
    image = parse_task(task(image=doc)).image
    assert (image.sha256, image.checksum_url, image.compression, image.bmap) == (
        None, "http://dp/SHA512SUMS", "xz", "http://dp/debian.raw.bmap")
    # A bmap named in the task proves the data by its range checksums; "auto" named explicitly too.
    assert parse_task(task(image={"url": "a.img.gz", "bmap": "a.img.bmap"})).image.bmap == "a.img.bmap"
    assert parse_task(task(image={"url": "a.img.gz", "bmap": "auto"})).image.sha256 is None
    assert parse_task(task(image={"url": "a.img", "sha256": SHA, "bmap": None})).image.bmap is None
    assert parse_task(task(image={"url": "a.img", "sha256": SHA, "bmap": "none"})).image.bmap is None


def test_unknown_field_is_refused_with_a_suggestion() -> None:
    exc = error(task(target={"allow_overwrit": True}))
    assert exc.field == "target.allow_overwrit"
    assert exc.found == "unknown field (did you mean 'allow_overwrite'?)"
    assert error(task(colour="red")).found == "unknown field"


def test_long_found_values_are_shortened() -> None:
    exc = error(task(after="x" * 500))
    assert len(exc.found) <= 60


# The status section -------------------------------------------------------------------------------------------------

TOKEN = "tok-0123456789abcdef"


def test_the_status_section_is_optional_and_its_token_a_secret() -> None:
    bare = parse_task(task())
    assert bare.status.url is None and bare.status.token is None
    t = parse_task(task(status={"url": "https://dp/api/v1/events", "token": TOKEN}))
    assert t.status.url == "https://dp/api/v1/events"
    assert t.status.token is not None and t.status.token.reveal() == TOKEN
    assert TOKEN not in repr(t) and TOKEN not in str(t.status)
    assert parse_task(task(status={"token": TOKEN})).status.url is None  # the PE's peagent.status= is used
    assert parse_task(task(status={"url": None, "token": None})).status == bare.status  # as peagent serve may say


def test_a_deployment_id_fits_a_status_event() -> None:
    assert parse_task(task(id="a" * 64)).deployment_id == "a" * 64
    assert error(task(id="a" * 65)).field == "id"


TOKEN_RULE = "a bearer token of 16-512 printable ASCII characters without spaces"


@pytest.mark.parametrize(("status", "field", "expected", "found"), [
    ({"url": "ftp://dp/events"}, "status.url", "an http:// or https:// URL", '"ftp://dp/events"'),
    ({"url": 5}, "status.url", "the http(s) URL status events are posted to, or null", "5"),
    ({"token": "short-secret-15"}, "status.token", TOKEN_RULE, "15 characters (too short to be hard to guess)"),
    ({"token": ""}, "status.token", TOKEN_RULE, "0 characters (too short to be hard to guess)"),
    ({"token": "x" * 513}, "status.token", TOKEN_RULE, "513 characters"),
    ({"token": "has a space in it, 20+"}, "status.token", TOKEN_RULE, "a space, a control or a non-ASCII character"),
    ({"token": 1234567890123456789}, "status.token", TOKEN_RULE, "a number"),
    ({"token": ["secret-secret-secret"]}, "status.token", TOKEN_RULE, "a list"),
    ({"url": "http://dp/e", "tokn": TOKEN}, "status.tokn", "one of the fields url, token",
     "unknown field (did you mean 'token'?)"),
    ("http://dp/e", "status", "an object with url and token", '"http://dp/e"'),
])
def test_status_section_errors_never_show_the_token(status: object, field: str, expected: str, found: str) -> None:
    exc = error(task(status=status))
    assert (exc.field, exc.expected, exc.found) == (field, expected, found)
    for secret in ("short-secret-15", "has a space", "secret-secret-secret", "1234567890123456789"):
        assert secret not in str(exc)
