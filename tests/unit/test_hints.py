"""Root-device hints: Ironic's keys, operators and normalisation (see peagent.hints).

The tables mirror ironic-python-agent's own tests (ironic_python_agent/tests/unit/test_device_hints.py:
ParseRootDeviceTestCase and MatchRootDeviceTestCase, same devices and hints), then add a case per
operator, the normalisation rules, our deliberate differences, and every error message. The
property tests state the semantics once for all inputs.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peagent.errors import TaskError
from peagent.hints import GIB, HINT_KEYS, Hints, parse_hint, parse_hints
from peagent.inventory import Disk

FIELD = "target.hints"
STRING_KEYS = [k for k, (kind, _) in HINT_KEYS.items() if kind is str]
ANY_OP = "no operator, or one of s==, s!=, s>=, s<=, s>, s<, <in>, <or>"
SIZE_OPS = "no operator, or one of ==, !=, >=, <=, >, <, <or>"


@dataclass(frozen=True)
class FakeDisk:
    """Any attribute values at all, as Disk.hint_value would return them."""

    values: dict[str, str | int | bool | None] = field(default_factory=dict)

    def hint_value(self, key: str) -> str | int | bool | None:
        return self.values.get(key)


def hints(**given: object) -> Hints:
    return parse_hints(dict(given), FIELD)


def parsed(key: str, value: object) -> tuple[str, tuple[object, ...]]:
    hint = parse_hint(key, value, f"{FIELD}.{key}")
    return hint.op, hint.values


def error(obj: object) -> TaskError:
    with pytest.raises(TaskError) as info:
        parse_hints(obj, FIELD)  # type: ignore[arg-type]
    return info.value


# --- Parsing: ironic-python-agent's ParseRootDeviceTestCase ------------------------------------

IRONIC_WITHOUT_OPERATORS = {
    "wwn": "123456", "model": "FOO model", "size": 12345, "serial": "foo-serial",
    "vendor": "foo VENDOR with space", "name": "/dev/sda", "wwn_with_extension": "123456111",
    "wwn_vendor_extension": "111", "rotational": True, "hctl": "1:0:0:0",
    "by_path": "/dev/disk/by-path/1:0:0:0",
}


def test_parse_without_operators_fills_in_the_defaults() -> None:
    # Ironic: 's== 123456', 's== foo%20model', '== 12345', ..., rotational True.
    got = {h.key: (h.op, h.values) for h in hints(**IRONIC_WITHOUT_OPERATORS).parsed}
    assert got == {
        "wwn": ("s==", ("123456",)), "model": ("s==", ("foo model",)), "size": ("==", (12345,)),
        "serial": ("s==", ("foo-serial",)), "vendor": ("s==", ("foo vendor with space",)),
        "name": ("s==", ("/dev/sda",)), "wwn_with_extension": ("s==", ("123456111",)),
        "wwn_vendor_extension": ("s==", ("111",)), "rotational": ("==", (True,)),
        "hctl": ("s==", ("1:0:0:0",)), "by_path": ("s==", ("/dev/disk/by-path/1:0:0:0",)),
    }


def test_parse_with_operators_keeps_them() -> None:
    got = {h.key: (h.op, h.values) for h in hints(
        wwn="s== 123456", model="s== foo MODEL", size=">= 12345", serial="s!= foo-serial",
        vendor="s== foo VENDOR with space", name="<or> /dev/sda <or> /dev/sdb",
        wwn_with_extension="s!= 123456111", wwn_vendor_extension="s== 111", rotational=True,
        hctl="s== 1:0:0:0", by_path="s== /dev/disk/by-path/1:0:0:0").parsed}
    assert got == {
        "wwn": ("s==", ("123456",)), "model": ("s==", ("foo model",)), "size": (">=", (12345,)),
        "serial": ("s!=", ("foo-serial",)), "vendor": ("s==", ("foo vendor with space",)),
        "name": ("<or>", ("/dev/sda", "/dev/sdb")), "wwn_with_extension": ("s!=", ("123456111",)),
        "wwn_vendor_extension": ("s==", ("111",)), "rotational": ("==", (True,)),
        "hctl": ("s==", ("1:0:0:0",)), "by_path": ("s==", ("/dev/disk/by-path/1:0:0:0",)),
    }


@pytest.mark.parametrize(("key", "value", "op", "values"), [
    ("name", "s== /dev/sdb", "s==", ("/dev/sdb",)),
    ("size", 12345, "==", (12345,)),
    ("size", "12345", "==", (12345,)),  # a JSON number or a string: Ironic reads str(value)
    ("size", "<or> 123 <or> 456 <or> 789", "<or>", (123, 456, 789)),
    ("model", "<or> foo <or> foo bar <or> bar", "<or>", ("foo", "foo bar", "bar")),
    ("model", "<in> foo bar", "<in>", ("foo bar",)),
    ("model", "s== test string with space", "s==", ("test string with space",)),
    ("model", "s!= SpongeBob", "s!=", ("spongebob",)),
    ("model", "no operators", "s==", ("no operators",)),
    ("model", "NoSpace", "s==", ("nospace",)),
    ("size", ">= 123", ">=", (123,)),
    ("size", "123", "==", (123,)),
    # The operator may touch the value and is case-insensitive: the whole expression is lowercased.
    ("model", "s==big model", "s==", ("big model",)),
    ("size", ">=100", ">=", (100,)),
    ("model", "S!= Foo", "s!=", ("foo",)),
    ("model", "<OR> a <Or> b", "<or>", ("a", "b")),
    ("model", "<or>a<or>b", "<or>", ("a", "b")),
    # The longest spelling wins, as in the grammar: "<=" not "<", "<in>" not "<", "s<=" not "s<".
    ("size", "<= 5", "<=", (5,)),
    ("size", "< 5", "<", (5,)),
    ("model", "s<= m", "s<=", ("m",)),
    ("model", "s< m", "s<", ("m",)),
    # Only the start counts: an operator inside a value is part of the value.
    ("model", "a <in> b", "s==", ("a <in> b",)),
    # A trailing <or> is ignored, as in Ironic's test ("<or> model 5 <or> ... <or>").
    ("model", "<or> a <or> b <or>", "<or>", ("a", "b")),
    ("model", "<or> a", "<or>", ("a",)),
    # Ironic's legacy "=" means ">=".
    ("size", "= 100", ">=", (100,)),
    # Surrounding blanks go, inner ones stay.
    ("serial", "  s==  A  B  ", "s==", ("a  b",)),
    # A bare kernel name means /dev/<name> (not for <in>, which looks for a substring).
    ("name", "sda", "s==", ("/dev/sda",)),
    ("name", "<or> sda <or> /dev/md0", "<or>", ("/dev/sda", "/dev/md0")),
    ("name", "<in> nvme", "<in>", ("nvme",)),
    ("by_path", "<in> pci-0000:00:04.0", "<in>", ("pci-0000:00:04.0",)),
])
def test_parse(key: str, value: object, op: str, values: tuple[object, ...]) -> None:
    assert parsed(key, value) == (op, values)


@pytest.mark.parametrize("value", [True, "true", "TRUE", " on ", "y", "yes", "1", "t"])
def test_rotational_true(value: object) -> None:
    assert parsed("rotational", value) == ("==", (True,))


@pytest.mark.parametrize("value", [False, "false", "off", "n", "No", "0", "f"])
def test_rotational_false(value: object) -> None:
    assert parsed("rotational", value) == ("==", (False,))


def test_no_hints_is_falsy() -> None:
    assert not hints()
    assert not Hints()
    assert hints(serial="x")
    assert Hints().describe() == "no hints"


# --- Errors: which hint, what was expected, what was found -------------------------------------

STR_TYPE = "a serial number (a string: " + ANY_OP + ")"


@pytest.mark.parametrize(("obj", "field", "expected", "found"), [
    ({"colour": "red"}, "colour",
     "a hint key, one of size, model, vendor, serial, wwn, wwn_with_extension, wwn_vendor_extension, "
     "name, rotational, hctl, by_path", "an unknown key"),
    ({"non-existent": "foo"}, "non-existent", "a hint key, one of size, model, vendor, serial, wwn, "
     "wwn_with_extension, wwn_vendor_extension, name, rotational, hctl, by_path", "an unknown key"),
    # String keys take strings (Ironic: 'is not a string value').
    ({"serial": 123}, "serial", STR_TYPE, "123"),
    ({"serial": None}, "serial", STR_TYPE, "null"),
    ({"serial": ["a"]}, "serial", STR_TYPE, "a list of 1 items"),
    ({"wwn": 123}, "wwn", "a WWN (a string: " + ANY_OP + ")", "123"),
    ({"name": 123}, "name", "a device name like /dev/sda (a string: " + ANY_OP + ")", "123"),
    ({"hctl": 123}, "hctl", "a SCSI address like 0:0:0:0 (a string: " + ANY_OP + ")", "123"),
    ({"by_path": 123}, "by_path", "a /dev/disk/by-path/ link (a string: " + ANY_OP + ")", "123"),
    # Empty (Ironic: 'expression is empty').
    ({"serial": ""}, "serial", "a serial number", "an empty string"),
    ({"serial": "  "}, "serial", "a serial number", 'only blanks ("  ")'),
    ({"size": ""}, "size", "a size in GiB", "an empty string"),
    # Operators a key cannot use.
    ({"serial": ">= 5"}, "serial", "a serial number, compared as a string: " + ANY_OP, "the numeric operator >="),
    ({"model": "== foo"}, "model", "a model string, compared as a string: " + ANY_OP, "the numeric operator =="),
    ({"model": "=foo"}, "model", "a model string, compared as a string: " + ANY_OP, "the numeric operator ="),
    ({"size": "s== 100"}, "size", "a size in GiB, compared as a number: " + SIZE_OPS, "the string operator s=="),
    ({"size": "<in> 1"}, "size", "a size in GiB, compared as a number: " + SIZE_OPS, "the string operator <in>"),
    ({"size": "<range-in> ( 10 100 )"}, "size", "a size in GiB: " + SIZE_OPS,
     "the operator <range-in>, which root-device hints do not support"),
    ({"model": "<all-in> a b"}, "model", "a model string: " + ANY_OP,
     "the operator <all-in>, which root-device hints do not support"),
    ({"rotational": "s== true"}, "rotational",
     "true or false, or one of the strings 1 t true on y yes / 0 f false off n no",
     '"s== true" (rotational takes no operator)'),
    # Malformed expressions.
    ({"size": ">="}, "size", "a value after >=", '">="'),
    ({"model": "s=="}, "model", "a value after s==", '"s=="'),
    ({"model": "<or>"}, "model", "a value after <or>", '"<or>"'),
    ({"model": "<or> <or>"}, "model", "a value after <or>", '"<or> <or>"'),
    ({"model": "s== a s== b"}, "model", "a single value after s==", '"s== a s== b"'),
    ({"model": "<in> a <in> b"}, "model", "a single value after <in>", '"<in> a <in> b"'),
    ({"model": "s== <in> a"}, "model", "a single value after s==", '"s== <in> a"'),
    ({"model": "<or> a <or> s== b"}, "model", "a plain value after each <or>", '"s== b" in "<or> a <or> s== b"'),
    # Sizes are whole numbers above 0 (Ironic: 'not an integer', 'should be a positive integer').
    ({"size": "not-int"}, "size", "a whole number of GiB above 0", '"not-int"'),
    ({"size": -123}, "size", "a whole number of GiB above 0", "-123"),
    ({"size": 0}, "size", "a whole number of GiB above 0", "0"),
    ({"size": "0"}, "size", "a whole number of GiB above 0", '"0"'),
    ({"size": ">= 0"}, "size", "a whole number of GiB above 0", '"0" in ">= 0"'),
    ({"size": "<or> 123 <or> non-int <or> 789"}, "size", "a whole number of GiB above 0",
     '"non-int" in "<or> 123 <or> non-int <or> 789"'),
    ({"size": "1.5"}, "size", "a whole number of GiB above 0", '"1.5"'),
    ({"size": 64.5}, "size", 'a size in GiB: a whole number above 0, or a string like ">= 100"', "64.5"),
    ({"size": True}, "size", 'a size in GiB: a whole number above 0, or a string like ">= 100"', "true (a boolean)"),
    # Booleans (Ironic: 'is not a Boolean value').
    ({"rotational": "not-bool"}, "rotational",
     "true or false, or one of the strings 1 t true on y yes / 0 f false off n no", '"not-bool"'),
    ({"rotational": 1}, "rotational", "true or false", "1"),
    ({"rotational": None}, "rotational", "true or false", "null"),
])
def test_errors_name_hint_expectation_and_finding(obj: dict[str, object], field: str, expected: str,
                                                  found: str) -> None:
    exc = error(obj)
    assert (exc.field, exc.expected, exc.found) == (f"{FIELD}.{field}", expected, found)
    assert str(exc) == f"{FIELD}.{field}: expected {expected}, found {found}"


def test_hints_must_be_an_object() -> None:
    exc = error("serial")
    assert (exc.field, exc.expected, exc.found) == (FIELD, "an object of root-device hints", '"serial"')


def test_constructing_hints_validates_them_too() -> None:
    with pytest.raises(TaskError, match=r"^hints\.size: expected a whole number of GiB above 0"):
        Hints((("size", 0),))


# --- Matching: ironic-python-agent's MatchRootDeviceTestCase -----------------------------------

IRONIC_DEVICES = {  # the same three devices; Ironic's "yes" is our True
    "sda": FakeDisk({"name": "/dev/sda", "size": 64424509440, "model": "ok model", "serial": "fakeserial"}),
    "sdb": FakeDisk({"name": "/dev/sdb", "size": 128849018880, "model": "big model", "serial": "veryfakeserial",
                     "rotational": True}),
    "sdc": FakeDisk({"name": "/dev/sdc", "size": 10737418240, "model": "small model",
                     "serial": "veryveryfakeserial", "rotational": False}),
}


@pytest.mark.parametrize(("given", "expected"), [
    ({"size": ">= 70"}, ["sdb"]),
    ({"rotational": False}, ["sdc"]),
    ({"size": ">=100", "rotational": True}, ["sdb"]),
    ({"size": ">= 50", "model": "s==big model", "serial": "s==veryfakeserial"}, ["sdb"]),
    ({"size": "<= 20", "model": "<or> model 5 <or> foomodel <or> small model <or>",
      "serial": "s== veryveryfakeserial"}, ["sdc"]),
    ({"rotational": False, "model": "<in> small"}, ["sdc"]),
    ({"size": "120", "model": "big model", "serial": "veryfakeserial"}, ["sdb"]),
    ({"size": ">=50", "model": "s==foo"}, []),
    ({"size": ">= 10"}, ["sda", "sdb", "sdc"]),
    ({"size": ">= 100500"}, []),
    ({"name": "s== /dev/sda"}, ["sda"]),
    # One case per operator on the same devices.
    ({"serial": "s!= fakeserial"}, ["sdb", "sdc"]),
    ({"model": "s< c"}, ["sdb"]),  # "big model" < "c"
    ({"model": "s<= ok model"}, ["sda", "sdb"]),
    ({"model": "s> ok model"}, ["sdc"]),
    ({"model": "s>= ok model"}, ["sda", "sdc"]),
    ({"serial": "<in> veryfake"}, ["sdb", "sdc"]),
    ({"serial": "<or> fakeserial <or> veryveryfakeserial"}, ["sda", "sdc"]),
    ({"size": "== 60"}, ["sda"]),
    ({"size": "!= 60"}, ["sdb", "sdc"]),
    ({"size": "> 60"}, ["sdb"]),
    ({"size": "< 60"}, ["sdc"]),
    ({"size": "<= 60"}, ["sda", "sdc"]),
    ({"size": "= 60"}, ["sda", "sdb"]),  # legacy: >=
    ({"size": "<or> 10 <or> 120"}, ["sdb", "sdc"]),  # Ironic: never matches (see the module)
    ({"rotational": "yes"}, ["sdb"]),  # sda has no rotational value: matches neither way
    ({"rotational": "no"}, ["sdc"]),
    # Normalisation: case, surrounding blanks, /dev/.
    ({"model": "  BIG Model "}, ["sdb"]),
    ({"model": "big  model"}, []),  # inner blanks count
    ({"name": "sdb"}, ["sdb"]),
    ({"name": "/DEV/SDB"}, ["sdb"]),
    ({"name": "<in> sd"}, ["sda", "sdb", "sdc"]),
])
def test_match_like_ironic(given: dict[str, object], expected: list[str]) -> None:
    h = hints(**given)
    assert [name for name, disk in IRONIC_DEVICES.items() if h.matches(disk)] == expected


def test_an_empty_or_missing_attribute_matches_nothing() -> None:
    # Ironic skips a device whose attribute is blank; a missing one (None) we treat the same, s!= included.
    blank = FakeDisk({"model": " "})
    for hint in ("foo", "s!= foo", "<in> f", "s> a", "s< z", "<or> a <or> b"):
        assert not hints(model=hint).matches(blank)
    missing = FakeDisk({})
    for key, hint in [("serial", "s!= foo"), ("serial", "none"), ("size", "!= 1"), ("rotational", False)]:
        assert not hints(**{key: hint}).matches(missing)


def test_size_is_compared_in_whole_gib_rounded_down() -> None:
    disk = FakeDisk({"size": 128 * GIB + 5})  # 128.000000005 GiB
    assert hints(size=128).matches(disk)
    assert hints(size="<= 128").matches(disk)
    assert not hints(size="> 128").matches(disk)
    assert not hints(size=">= 129").matches(disk)
    assert not hints(size="< 128").matches(disk)
    assert not hints(size=128).matches(FakeDisk({"size": 128 * GIB - 1}))


def test_in_looks_for_the_substring_before_url_quoting() -> None:
    # Ironic quotes first: "<in> 20" would match "ok%20model", "<in> 3" would match "1%3A0%3A0%3A0".
    disk = FakeDisk({"model": "ok model", "hctl": "1:0:0:0"})
    assert not hints(model="<in> 20").matches(disk)
    assert not hints(hctl="<in> 3").matches(disk)
    assert hints(hctl="<in> 1:0").matches(disk)
    assert hints(model="<in> K M").matches(disk)


def test_string_ordering_compares_the_quoted_forms_like_ironic() -> None:
    # Raw, ":" (0x3a) sorts after "." (0x2e); quoted, ":" is "%3A" and "%" (0x25) sorts first.
    disk = FakeDisk({"hctl": "1:0"})
    assert hints(hctl="s< 1.0").matches(disk)
    assert not hints(hctl="s> 1.0").matches(disk)


def test_a_real_disk() -> None:
    disk = Disk(name="sda", path="/dev/sda", size=480103981056, model="Samsung SSD 860", vendor="ATA",
                serial="S3Z9NB0K", wwn="0x5002538e40a1b2c3", hctl="0:0:0:0", rotational=False,
                by_path="/dev/disk/by-path/pci-0000:00:17.0-ata-1")
    assert hints(serial="s3z9nb0k", rotational="no", size=447).matches(disk)
    assert hints(model="<in> ssd 8", vendor="<or> ata <or> nvme", hctl="0:0:0:0").matches(disk)
    assert hints(by_path="/dev/disk/by-path/pci-0000:00:17.0-ata-1", name="sda", wwn="0X5002538E40A1B2C3").matches(disk)
    assert not hints(serial="S3Z9NB0K", rotational=True).matches(disk)
    assert not hints(wwn_with_extension="s!= x").matches(disk)  # not known for this disk


@pytest.mark.parametrize(("given", "text"), [
    ({"serial": "ABC", "size": ">= 100"}, "serial s== 'ABC', size >= 100"),
    ({"serial": "S1", "size": 64}, "serial s== 'S1', size == 64"),
    ({"model": "<or> A <or> b c <or>"}, "model <or> 'A' <or> 'b c'"),
    ({"size": "<or> 64 <or> 128"}, "size <or> 64 <or> 128"),
    ({"size": "= 100"}, "size >= 100"),
    ({"rotational": "yes"}, "rotational true"),
    ({"rotational": False}, "rotational false"),
    ({"name": "sda"}, "name s== '/dev/sda'"),
    ({"model": " S!=  Foo Bar "}, "model s!= 'Foo Bar'"),
    ({"model": "<in> it's"}, "model <in> \"it's\""),
])
def test_describe(given: dict[str, object], text: str) -> None:
    assert hints(**given).describe() == text


# --- Properties --------------------------------------------------------------------------------

# Values that cannot contain an operator (every operator has one of < > = !).
plain = st.text(st.characters(exclude_characters="<>=!", exclude_categories=()), min_size=1).filter(str.strip)
# Anything a disk may report, including blanks, case and lone surrogates.
have_text = st.text(st.characters(exclude_categories=()))
string_key = st.sampled_from([k for k in STRING_KEYS if k != "name"])  # name adds /dev/ (tested apart)
sizes = st.integers(min_value=0, max_value=1 << 50)
numeric_ops = {"==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt,
               "<": operator.lt}
string_ops = {"s" + op: fn for op, fn in numeric_ops.items()}


def norm(value: str) -> str:
    return value.strip().lower()


def disk_with(key: str, value: str | int | bool | None) -> FakeDisk:
    return FakeDisk({key: value})


@given(string_key, plain, have_text)
def test_s_eq_matches_iff_the_normalised_values_are_equal(key: str, want: str, have: str) -> None:
    expected = bool(norm(have)) and norm(have) == norm(want)
    assert hints(**{key: f"s== {want}"}).matches(disk_with(key, have)) == expected
    # No operator means s==; the operator is case-insensitive.
    assert hints(**{key: want}).matches(disk_with(key, have)) == expected
    assert hints(**{key: f"S=={want}"}).matches(disk_with(key, have)) == expected


@given(string_key, plain, st.one_of(have_text, st.none()))
def test_s_ne_is_the_negation_of_s_eq_for_present_values(key: str, want: str, have: str | None) -> None:
    eq = hints(**{key: f"s== {want}"}).matches(disk_with(key, have))
    ne = hints(**{key: f"s!= {want}"}).matches(disk_with(key, have))
    present = have is not None and bool(have.strip())
    assert ne == (present and not eq)


@given(string_key, plain, have_text)
def test_in_matches_iff_substring_of_the_normalised_value(key: str, want: str, have: str) -> None:
    expected = bool(norm(have)) and norm(want) in norm(have)
    assert hints(**{key: f"<in> {want}"}).matches(disk_with(key, have)) == expected


@given(string_key, st.lists(plain.filter(lambda v: "<or>" not in v.lower()), min_size=1, max_size=4), have_text)
def test_or_matches_iff_any_alternative_matches(key: str, alternatives: list[str], have: str) -> None:
    expr = " ".join(f"<or> {a}" for a in alternatives)
    expected = any(hints(**{key: f"s== {a}"}).matches(disk_with(key, have)) for a in alternatives)
    assert hints(**{key: expr}).matches(disk_with(key, have)) == expected


@given(string_key, st.sampled_from(sorted(string_ops)), plain, have_text)
def test_string_ordering_is_python_comparison_of_the_quoted_normalised_values(
        key: str, op: str, want: str, have: str) -> None:
    def q(value: str) -> str:
        return quote(norm(value), errors="surrogatepass")

    expected = bool(norm(have)) and string_ops[op](q(have), q(want))
    assert hints(**{key: f"{op} {want}"}).matches(disk_with(key, have)) == expected


@given(st.sampled_from(sorted(numeric_ops)), st.integers(min_value=1, max_value=1 << 20), sizes)
def test_numeric_operators_are_python_comparisons_on_whole_gib(op: str, n: int, size: int) -> None:
    disk = disk_with("size", size)
    assert hints(size=f"{op} {n}").matches(disk) == numeric_ops[op](size // GIB, n)
    assert hints(size=f"{op}{n}").matches(disk) == numeric_ops[op](size // GIB, n)


@given(st.integers(min_value=1, max_value=1 << 20), st.one_of(sizes, st.none(), st.booleans(), st.text()))
def test_size_defaults_and_negation(n: int, have: object) -> None:
    disk = disk_with("size", have)  # type: ignore[arg-type]
    eq = hints(size=f"== {n}").matches(disk)
    assert hints(size=n).matches(disk) == eq == hints(size=str(n)).matches(disk)
    present = isinstance(have, int) and not isinstance(have, bool)
    assert hints(size=f"!= {n}").matches(disk) == (present and not eq)


@given(st.lists(st.integers(min_value=1, max_value=4096), min_size=1, max_size=4), sizes)
def test_size_or_is_any_equal(ns: list[int], size: int) -> None:
    expr = " ".join(f"<or> {n}" for n in ns)
    assert hints(size=expr).matches(disk_with("size", size)) == (size // GIB in ns)


@given(st.sampled_from(["true", "1", "t", "on", "y", "yes", "false", "0", "f", "off", "n", "no"]),
       st.one_of(st.booleans(), st.none()))
def test_rotational_is_equality_on_booleans(word: str, have: bool | None) -> None:
    want = word in ("true", "1", "t", "on", "y", "yes")
    for spelling in (want, word, word.upper(), f" {word} "):
        assert hints(rotational=spelling).matches(disk_with("rotational", have)) == (have is want)


@given(plain.map(str.strip).filter(lambda v: not v.startswith("/")), have_text)
def test_a_bare_name_means_dev_name(want: str, have: str) -> None:
    disk = disk_with("name", have)
    assert hints(name=want).matches(disk) == hints(name=f"/dev/{want}").matches(disk)


values_of_disks = st.one_of(st.none(), st.booleans(), sizes, have_text)
hint_values = st.one_of(
    st.sampled_from([">= 1", "<= 100", "s== a", "<in> a", "<or> a <or> b", "true", "no", "sda", "1"]), plain,
)


@given(st.dictionaries(st.sampled_from(list(HINT_KEYS)), hint_values, max_size=4),
       st.dictionaries(st.sampled_from(list(HINT_KEYS)), values_of_disks))
def test_several_hints_match_iff_each_does(given: dict[str, object], values: dict[str, object]) -> None:
    singles = []
    for key, value in given.items():
        try:
            singles.append(hints(**{key: value}))
        except TaskError:
            return  # the whole object is refused too (checked below)
    disk = FakeDisk(values)  # type: ignore[arg-type]
    assert hints(**given).matches(disk) == all(h.matches(disk) for h in singles)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(st.characters(exclude_categories=()))),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(), inner, max_size=3)),
    max_leaves=6,
)
# Text built from operator pieces finds the corners of the grammar more often than random text.
expressions = st.lists(st.sampled_from(
    ["<or>", "<in>", "<all-in>", "<range-in>", "s==", "S!=", "s<", "s>=", "==", "=", "!=", ">", "<=", " ", "  ",
     "a", "B", "0", "12", "-1", "/dev/", "sda", "%20", ":", "İ", "\ud800"]), max_size=8).map("".join)


@settings(max_examples=500)
@given(st.dictionaries(st.one_of(st.sampled_from(list(HINT_KEYS)), st.text()),
                       st.one_of(json_values, expressions), max_size=4),
       st.lists(st.dictionaries(st.sampled_from(list(HINT_KEYS)), values_of_disks), max_size=3))
def test_parse_never_crashes_and_parsed_hints_never_fail_to_match(
        obj: dict[str, object], disks: list[dict[str, object]]) -> None:
    try:
        h = parse_hints(obj, FIELD)
    except TaskError as exc:
        assert exc.field.startswith(f"{FIELD}.") and exc.expected and exc.found
        return
    assert isinstance(h.describe(), str)
    for values in disks:
        assert isinstance(h.matches(FakeDisk(values)), bool)  # type: ignore[arg-type]
