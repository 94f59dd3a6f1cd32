"""Root-device hints: how a task names the disk to deploy to.

Kernel names like ``sda`` or ``nvme0n1`` are not stable: they depend on which disk answers first
at boot. A task therefore names its target by what the disk *is*: ``{"serial": "S3Z9NB0K"}``, or
``{"size": ">= 100", "rotational": false}``. A disk matches when it satisfies every hint (a
logical AND); target selection (:mod:`peagent.target`) then insists on exactly one candidate.

The keys, the operators and the value syntax are OpenStack Ironic's, so hints written for Ironic
work here unchanged. The semantics below were read from Ironic's code, not its prose:

* ironic-python-agent ``ironic_python_agent/device_hints.py`` (``parse_root_device_hints``,
  ``find_devices_by_hints``) and its tests ``ironic_python_agent/tests/unit/test_device_hints.py``:
  the current implementation, followed wherever versions differ;
* oslo.utils ``oslo_utils/specs_matcher.py`` (``make_grammar``: the operators and how an
  expression is tokenised; ``op_methods``: what each operator computes) and
  ``oslo_utils/strutils.py`` (``bool_from_string``);
* the older copies: ironic-lib ``ironic_lib/utils.py`` and Ironic's ``ironic/common/utils.py``,
  and Ironic's guide ``doc/source/install/include/root-device-hints.inc``.

Keys
----
``size`` (GiB, a number), ``rotational`` (a boolean), and the strings ``model``, ``vendor``,
``serial``, ``wwn``, ``wwn_with_extension``, ``wwn_vendor_extension``, ``name`` (``/dev/sda``),
``hctl`` (``0:0:0:0``) and ``by_path`` (the whole link, ``/dev/disk/by-path/pci-...``).

Expressions
-----------
A hint's value is ``[operator] value``. The whole expression is stripped and lowercased before
anything else, so operators are case-insensitive (``S==``, ``<OR>``) and may touch the value
(``>=100``, ``s==big model``). The operator is recognised only at the very start; when several
spellings fit, the longest wins (``<=`` not ``<``, ``<in>`` not ``<``), as in the grammar.

* String keys: ``s==`` ``s!=`` ``s>=`` ``s<=`` ``s>`` ``s<`` (Python string comparison),
  ``<in>`` (the value is a substring of the disk's), ``<or> a <or> b ...`` (equal to any). No
  operator means ``s==``.
* ``size``: ``==`` ``!=`` ``>=`` ``<=`` ``>`` ``<`` and ``<or>``, on whole numbers above 0 (a JSON
  number or a string: ``64``, ``"64"``, ``">= 64"``). No operator means ``==``. Ironic's legacy
  ``=`` (which specs_matcher defines as ``>=``) is accepted and shown as ``>=``.
* ``rotational``: ``true``/``false``, or a string ``bool_from_string`` accepts: ``1 t true on y
  yes`` / ``0 f false off n no`` (any case, surrounding blanks ignored). No operator is allowed;
  Ironic refuses one too (``"s== true"`` is not a boolean string).
* ``<or>`` takes one or more values, each after its own ``<or>``; a trailing ``<or>`` is ignored,
  as in Ironic's tests (``"<or> a <or> b <or>"``). Every other operator takes exactly one value.

Normalisation (string keys)
---------------------------
Both the hint's values and the disk's value are compared after ``str.strip()``,
``str.lower()`` and URL quoting (``urllib.parse.quote``, which keeps ``/`` and escapes blanks
and punctuation): ``"Foo Bar"`` and ``" foo bar "`` are equal, ``"foo  bar"`` (two blanks) is
not. Quoting changes nothing for equality, but the ordering operators (``s<`` ...) compare the
quoted forms, as Ironic does. A disk whose value is empty or blank matches no hint on that key.

Deliberate differences from Ironic
----------------------------------
Each makes a hint mean what it plainly says where Ironic crashes, silently drops part of the
hint, or matches by accident; none changes a well-formed hint that works in Ironic, except
where size is concerned (the first item).

* ``size`` compares *whole* GiB, rounded down (``bytes // 2**30``): ``"size": 128`` matches a
  disk of 128.4 GiB. That is what Ironic did under Python 2 (integer division) and what its
  guide describes ("size of the device in GiB"); current ironic-python-agent divides exactly
  (``bytes / units.Gi``, a float), so ``==`` only matches disks of an exact number of GiB.
  ``<`` and ``>=`` agree either way; ``==``, ``!=``, ``<=`` and ``>`` differ on disks that are
  not a whole number of GiB.
* ``<or>`` on ``size`` matches when any value equals the size; in Ironic it never matches
  (specs_matcher compares the float size with the value *string*).
* ``name`` also accepts a bare kernel name: a value not starting with ``/`` gets ``/dev/``
  prefixed (``"sda"`` means ``/dev/sda``), except after ``<in>``. Ironic compares ``"sda"``
  with ``"/dev/sda"`` and never matches.
* ``<in>`` tests the substring before URL quoting. Ironic tests it after, so ``"<in> 20"``
  matches any value with a blank in it (``%20``) and ``"<in> 3"`` any hctl (``:`` is ``%3A``).
* A disk lacking the attribute (``None``) matches no hint on that key, ``s!=`` included. Ironic
  turns the missing value into the string ``"none"`` (``str(None)``) and compares that.
* Refused when the task is read, with a message naming the hint: a numeric operator on a
  string key and a string operator on ``size`` (Ironic accepts both, then crashes converting
  to float or never matches), ``<all-in>`` and ``<range-in>`` (ironic-python-agent rejects or
  crashes on them), a one-value operator repeated (``"s== a s== b"``, ``"s== a s=="``: Ironic
  silently uses ``a``), an operator with no value (Ironic raises a parser exception), a value
  that itself starts with an operator (``"s== <in> a"``, ``"<or> a <or> s== b"``: a typo; Ironic
  fails on the first form and takes ``s== b`` literally in the second), and ``rotational``
  given as a JSON number (``1``; Ironic reads ``str(1)``): JSON has booleans.
* An empty alternative (``"<or> a <or> <or> b"``) is ignored; Ironic drops every alternative
  after it.
* Ironic's ``tran`` key (the transport, from lsblk) is not offered: unknown keys are refused.

Hints are parsed when the task is read: an unknown key, a wrongly typed value or a malformed
operator is a :class:`~peagent.errors.TaskError` naming the hint, because a hint that is
silently dropped or misread picks the wrong disk.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from peagent.errors import TaskError, describe

GIB = 1 << 30

# Key -> (type, what it is, for messages). The order is the order error messages list them in.
HINT_KEYS: dict[str, tuple[type, str]] = {
    "size": (int, "a size in GiB"),
    "model": (str, "a model string"),
    "vendor": (str, "a vendor string"),
    "serial": (str, "a serial number"),
    "wwn": (str, "a WWN"),
    "wwn_with_extension": (str, "a WWN with extension"),
    "wwn_vendor_extension": (str, "a WWN vendor extension"),
    "name": (str, "a device name like /dev/sda"),
    "rotational": (bool, "true or false"),
    "hctl": (str, "a SCSI address like 0:0:0:0"),
    "by_path": (str, "a /dev/disk/by-path/ link"),
}

STRING_OPERATORS = ("s==", "s!=", "s>=", "s<=", "s>", "s<", "<in>", "<or>")
NUMERIC_OPERATORS = ("==", "!=", ">=", "<=", ">", "<", "<or>")
# specs_matcher's legacy "=" means ">=" (kept there for Nova's capabilities filter).
_LEGACY = {"=": ">="}
# In specs_matcher's grammar, but ironic-python-agent cannot evaluate them on root-device hints.
_UNSUPPORTED = ("<all-in>", "<range-in>")
# Every spelling, longest first: an expression's operator is the longest one it starts with,
# which is what the grammar's ordered alternatives amount to ("<=" before "<", "<in>" before "<").
_SPELLINGS = sorted({*STRING_OPERATORS, *NUMERIC_OPERATORS, *_LEGACY, *_UNSUPPORTED}, key=len, reverse=True)

# strutils.TRUE_STRINGS / FALSE_STRINGS.
_TRUE = ("1", "t", "true", "on", "y", "yes")
_FALSE = ("0", "f", "false", "off", "n", "no")

_ORDER: dict[str, Callable[[object, object], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">=": operator.ge,
    "<=": operator.le, ">": operator.gt, "<": operator.lt,
}
# The string operators compute the same comparisons, on (quoted) strings.
_COMPARE = {**_ORDER, **{"s" + op: fn for op, fn in _ORDER.items()}}

_STRING_SYNTAX = f"no operator, or one of {', '.join(STRING_OPERATORS)}"
_SIZE_SYNTAX = f"no operator, or one of {', '.join(NUMERIC_OPERATORS)}"


class HintedDisk(Protocol):
    """What hints look at; peagent.inventory's Disk provides it."""

    def hint_value(self, key: str) -> str | int | bool | None: ...


@dataclass(frozen=True)
class Hint:
    """One parsed hint: its key, its operator (the default filled in) and its values.

    ``values`` are what is compared: normalised strings (stripped, lowercased, not yet quoted),
    whole GiB, or one boolean. ``shown`` are the same values as the task wrote them (stripped,
    case kept), for messages.
    """

    key: str
    op: str
    values: tuple[str | int | bool, ...]
    shown: tuple[str, ...]

    def matches(self, have: str | int | bool | None) -> bool:
        """Whether a disk whose attribute ``key`` is ``have`` satisfies this hint."""
        kind = HINT_KEYS[self.key][0]
        if kind is bool:
            return isinstance(have, bool) and have == self.values[0]
        if kind is int:
            if not isinstance(have, int) or isinstance(have, bool):
                return False
            gib = have // GIB  # whole GiB, rounded down: see "Deliberate differences"
            if self.op == "<or>":
                return gib in self.values
            return _COMPARE[self.op](gib, self.values[0])
        if not isinstance(have, str):
            return False
        value = _normalise(have)
        if not value:
            return False  # Ironic skips a disk whose attribute is empty
        if self.op == "<or>":
            return value in self.values
        if self.op == "<in>":
            return str(self.values[0]) in value
        return _COMPARE[self.op](_quote(value), _quote(str(self.values[0])))

    def describe(self) -> str:
        if HINT_KEYS[self.key][0] is bool:
            return f"{self.key} {self.shown[0]}"
        quoted = self.shown if self.key == "size" else tuple(repr(v) for v in self.shown)
        if self.op == "<or>":
            return f"{self.key} " + " ".join(f"<or> {v}" for v in quoted)
        return f"{self.key} {self.op} {quoted[0]}"


@dataclass(frozen=True)
class Hints:
    """A task's hints: the ``(key, value)`` pairs as written, parsed when constructed.

    Construction parses (and so validates) every pair, so a ``Hints`` value is always usable;
    :func:`parse_hints` does the same with error messages naming the task's field.
    """

    items: tuple[tuple[str, object], ...] = ()
    parsed: tuple[Hint, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed", tuple(parse_hint(k, v, f"hints.{k}") for k, v in self.items))

    def __bool__(self) -> bool:
        return bool(self.items)

    def matches(self, disk: HintedDisk) -> bool:
        return all(hint.matches(disk.hint_value(hint.key)) for hint in self.parsed)

    def describe(self) -> str:
        return ", ".join(hint.describe() for hint in self.parsed) or "no hints"


def parse_hints(obj: dict[str, object], field: str) -> Hints:
    """Parse the hints object found at ``field`` (``target.hints``) of a task."""
    if not isinstance(obj, dict):
        raise TaskError(field, "an object of root-device hints", describe(obj))
    # Parse here first so that errors name the task's field; Hints() then parses again (cheap).
    for key, value in obj.items():
        parse_hint(key, value, f"{field}.{key}")
    return Hints(tuple(obj.items()))


def parse_hint(key: object, value: object, field: str) -> Hint:
    """Parse one hint, raising TaskError(field, expected, found) when it is not valid."""
    if not isinstance(key, str) or key not in HINT_KEYS:
        raise TaskError(field, f"a hint key, one of {', '.join(HINT_KEYS)}", "an unknown key")
    kind, what = HINT_KEYS[key]
    if kind is bool:
        return _parse_rotational(key, value, field)
    if kind is int:
        return _parse_size(key, value, field, what)
    return _parse_string(key, value, field, what)


def _parse_rotational(key: str, value: object, field: str) -> Hint:
    if isinstance(value, bool):
        return Hint(key, "==", (value,), (str(value).lower(),))
    if not isinstance(value, str):
        raise TaskError(field, "true or false", describe(value))
    word = value.strip().lower()
    if word in _TRUE or word in _FALSE:
        return Hint(key, "==", (word in _TRUE,), (str(word in _TRUE).lower(),))
    found = describe(value)
    if _operator_of(word):
        found += " (rotational takes no operator)"
    expected = f"true or false, or one of the strings {' '.join(_TRUE)} / {' '.join(_FALSE)}"
    raise TaskError(field, expected, found)


def _parse_size(key: str, value: object, field: str, what: str) -> Hint:
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)  # Ironic reads str(expression): 64 and "64" are the same hint
    elif isinstance(value, str):
        text = value
    else:
        raise TaskError(field, f'{what}: a whole number above 0, or a string like ">= 100"', describe(value))
    op, values, _ = _split(text, field, what, _SIZE_SYNTAX)
    op = _LEGACY.get(op, op)
    if op and op not in NUMERIC_OPERATORS:
        raise TaskError(field, f"{what}, compared as a number: {_SIZE_SYNTAX}", _operator_found(op))
    sizes = []
    for v in values:
        try:
            n = int(v)  # as Ironic: int() of each value, which must be above 0
        except ValueError:
            n = 0
        if n <= 0:
            whole = isinstance(value, int) or v == text.strip().lower()
            found = describe(value) if whole else f"{describe(v)} in {describe(value)}"
            raise TaskError(field, "a whole number of GiB above 0", found)
        sizes.append(n)
    return Hint(key, op or "==", tuple(sizes), tuple(str(n) for n in sizes))


def _parse_string(key: str, value: object, field: str, what: str) -> Hint:
    if not isinstance(value, str):
        raise TaskError(field, f"{what} (a string: {_STRING_SYNTAX})", describe(value))
    op, values, shown = _split(value, field, what, _STRING_SYNTAX)
    if op and op not in STRING_OPERATORS:
        raise TaskError(field, f"{what}, compared as a string: {_STRING_SYNTAX}", _operator_found(op))
    if key == "name" and op != "<in>":
        # Convenience beyond Ironic: "sda" means /dev/sda (a substring stays a substring).
        values = tuple(v if v.startswith("/") else "/dev/" + v for v in values)
        shown = tuple(v if v.startswith("/") else "/dev/" + v for v in shown)
    return Hint(key, op or "s==", values, shown)


def _split(text: str, field: str, what: str, syntax: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Split an expression into its operator ("" when none) and values, lowercased and as written.

    Follows ironic-python-agent's _extract_hint_operator_and_values: strip and lowercase the whole
    expression, take the operator at its start, split the rest on that operator, strip the values.
    """
    low = text.strip().lower()
    if not low:
        raise TaskError(field, what, "an empty string" if not text else f"only blanks ({describe(text)})")
    # Values are shown with their case kept. Positions in the lowercased text are positions in the
    # original when lowering mapped every character to one character (nearly always: "İ" is an
    # exception); otherwise the lowercased text is shown.
    orig = text.strip()
    if len(orig) != len(low):
        orig = low
    op = _operator_of(low)
    if not op:
        return "", (low,), (orig,)
    if op in _UNSUPPORTED:
        raise TaskError(field, f"{what}: {syntax}", _operator_found(op))
    spans = _spans_between(low, op)[1:]  # the first span is the empty text before the operator
    pairs = [(low[a:b].strip(), orig[a:b].strip()) for a, b in spans]
    pairs = [(v, s) for v, s in pairs if v]  # "<or> a <or>" and "<or> a <or> <or> b": no empty value
    if not pairs:
        raise TaskError(field, f"a value after {op}", describe(text))
    if op != "<or>" and len(spans) > 1:
        # "s== a s== b": Ironic would silently keep "a"; two values for one comparison is a mistake.
        raise TaskError(field, f"a single value after {op}", describe(text))
    for v, s in pairs:
        if _operator_of(v):
            # "s== <in> a", "<or> s== a": one operator per hint, at its start.
            found = describe(text) if op != "<or>" else f"{describe(s)} in {describe(text)}"
            expected = f"a single value after {op}" if op != "<or>" else "a plain value after each <or>"
            raise TaskError(field, expected, found)
    return op, tuple(v for v, _ in pairs), tuple(s for _, s in pairs)


def _spans_between(text: str, sep: str) -> list[tuple[int, int]]:
    """The (start, end) spans of text between occurrences of sep, like re.split(sep, text)."""
    spans, start = [], 0
    while (i := text.find(sep, start)) >= 0:
        spans.append((start, i))
        start = i + len(sep)
    spans.append((start, len(text)))
    return spans


def _operator_of(low: str) -> str:
    return next((op for op in _SPELLINGS if low.startswith(op)), "")


def _operator_found(op: str) -> str:
    if op in _UNSUPPORTED:
        return f"the operator {op}, which root-device hints do not support"
    if op in STRING_OPERATORS and op not in NUMERIC_OPERATORS:
        return f"the string operator {op}"
    return f"the numeric operator {op}"


def _normalise(value: str) -> str:
    """Ironic's normalisation of a string, before quoting: stripped and lowercased."""
    return value.strip().lower()


def _quote(value: str) -> str:
    # Ironic's urllib.parse.quote; surrogatepass so that a lone surrogate (valid in JSON text)
    # is compared instead of raising UnicodeEncodeError.
    return quote(value, errors="surrogatepass")
