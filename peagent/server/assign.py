"""Assignments: which task a machine that asks ``peagent serve`` is given, by rules an administrator writes.

A machine identifies itself by what its firmware or the PE knows: its MACs, SMBIOS UUID, serial
number, vendor and model (:class:`Identity`). The configuration (``DIR/peagent-serve.json``) lists
**rules**, tried in order; a rule's ``match`` keys (``mac``, ``uuid``, ``serial``, ``vendor``,
``model``: shell globs, case-insensitive; ``group``: a named list of MACs, UUIDs and serials) must
all match, and the first rule that matches names the task. A machine no rule matches is
**unknown**: it gets ``default_task`` (policy ``"default"``) or is refused (``"refuse"``).
Without a configuration, the server does what a static DP does: the machine's task is the first
of its task files that exists (``tasks/<mac-with-dashes>.json`` for each MAC,
``tasks/<uuid>.json``, ``tasks/default.json``: :func:`static_candidates`), and a machine with
none still boots the PE (``Decision("lookup")``; the server looks, the PE finds nothing).

Two flags make a rule more careful. ``once``: a machine whose deployment from this rule finished
(``done`` or ``complete``) is not given it again, so a machine that network-boots first does not
re-image itself on every boot. ``approve``: the machine waits (``pending``) until an administrator
approves it. Independently of any rule, an administrator may **postpone** a machine (it may deploy
from a given time on, which is also an approval for then) or **cancel** it (refused until approved
again). An approval is used up by the deployment it lets through.

Deciding is pure: :func:`decide` takes the configuration, the machine's identity, what the store
knows about the machine (:class:`MachineView`) and the time, and returns a :class:`Decision`; the
server does the I/O around it. :func:`parse_assignments` validates a configuration document,
naming the field, what was expected and what was found, so a typo in a rule never silently
matches every machine.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from peagent.errors import FieldError, describe

UNKNOWN_POLICIES = ("default", "refuse")
MATCH_KEYS = ("mac", "uuid", "serial", "vendor", "model", "group")
IDENTITY_KEYS = ("mac", "uuid", "serial", "vendor", "model")
STATES = ("approved", "pending", "postponed", "cancelled", "none")
DEFAULT_RULE = "default"  # the rule name a default-task deployment is recorded under
STATIC_RULE = "static"  # ... and one of a task file found without a configuration
DEFAULT_TASK = "tasks/default.json"
DEFAULT_RETRY_AFTER = 60  # seconds: how often a waiting machine asks again
MAX_IDENTITY_TEXT = 200
MAX_MACS = 32

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_MAC = re.compile(r"[0-9a-f]{2}([:-][0-9a-f]{2}){5}")
_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
_PLACEHOLDER_UUIDS = {"00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"}
_CONFIG_KEYS = ("unknown", "default_task", "groups", "rules", "retry_after")
_RULE_KEYS = ("name", "match", "task", "once", "approve")


class AssignmentError(FieldError):
    """The assignment configuration is wrong: which field, what was expected, what was found."""


class IdentityError(FieldError):
    """A machine's identity (the query of a task request) is malformed: which parameter, and why."""

    subject = "parameter "


@dataclass(frozen=True)
class Identity:
    """What a machine says it is. MACs lower case with colons, the UUID canonical lower case."""

    macs: tuple[str, ...] = ()
    uuid: str | None = None
    serial: str | None = None
    vendor: str | None = None
    model: str | None = None

    @property
    def key(self) -> str | None:
        """The machine's key: its SMBIOS UUID when it has a real one, else its first MAC."""
        return machine_key(self.uuid, self.macs)


@dataclass(frozen=True)
class Rule:
    """One assignment rule; ``match`` holds (key, pattern) pairs, all of which must match."""

    name: str
    task: str
    match: tuple[tuple[str, str], ...] = ()
    once: bool = False
    approve: bool = False


@dataclass(frozen=True)
class Assignments:
    """A validated configuration; ``configured`` False (the default) when there is none: task files as they are."""

    unknown: str = "default"
    default_task: str | None = DEFAULT_TASK
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    retry_after: int = DEFAULT_RETRY_AFTER
    configured: bool = False


@dataclass(frozen=True)
class MachineView:
    """What the store knows about a machine, as far as a decision needs it.

    ``state`` is the administrator's hold (one of :data:`STATES`); ``completed_rules`` the rules
    whose deployment to this machine finished; ``running`` the deployment still in progress that
    the server handed out, as (deployment id, rule), so a PE that reboots mid-deploy continues it.
    """

    state: str = "none"
    postponed_until: float | None = None
    completed_rules: frozenset[str] = frozenset()
    running: tuple[str, str] | None = None


@dataclass(frozen=True)
class Decision:
    """What to tell a machine: ``kind`` is one of deploy, lookup, none, pending, postponed, refused, cancelled.

    For ``deploy``: the rule and task file, and ``reuse``, the running deployment to continue (or
    None for a new one). For ``lookup`` (no configuration): ``candidates``, the task files to try;
    the first that exists is deployed. For ``pending``/``postponed``: ``retry_after`` seconds.
    ``reason`` is for people (it is echoed on the machine's console).
    """

    kind: str
    reason: str
    rule: str | None = None
    task: str | None = None
    reuse: str | None = None
    retry_after: int | None = None
    until: float | None = None
    candidates: tuple[str, ...] = ()  # for lookup: the task files to try, in order


def machine_key(uuid: str | None, macs: tuple[str, ...] | list[str]) -> str | None:
    """A machine's key: the UUID (lower case) unless missing or a placeholder, else the first MAC."""
    if uuid and uuid.lower() not in _PLACEHOLDER_UUIDS:
        return uuid.lower()
    return macs[0].lower() if macs else None


def effective_state(state: str, postponed_until: float | None, now: float) -> str:
    """The hold as it stands at ``now``: a postponement that has run out is an approval."""
    if state == "postponed" and (postponed_until is None or postponed_until <= now):
        return "approved"
    return state


def parse_identity(query: Mapping[str, list[str]]) -> Identity:
    """A machine's identity from a request's query (``mac`` may repeat); blank values count as absent."""
    for name in query:
        if name not in IDENTITY_KEYS:
            raise IdentityError(name, f"one of the parameters {', '.join(IDENTITY_KEYS)}", "an unknown parameter")
    macs: list[str] = []
    for value in query.get("mac", []):
        value = value.strip().lower()
        if not value:
            continue
        if not _MAC.fullmatch(value):
            raise IdentityError("mac", "a MAC address like 52:54:00:12:34:56", describe(value))
        mac = value.replace("-", ":")
        if mac not in macs:
            macs.append(mac)
    if len(macs) > MAX_MACS:
        raise IdentityError("mac", f"at most {MAX_MACS} MAC addresses", f"{len(macs)}")
    return Identity(macs=tuple(macs), uuid=_uuid(_single(query, "uuid")), serial=_single(query, "serial"),
                    vendor=_single(query, "vendor"), model=_single(query, "model"))


def _single(query: Mapping[str, list[str]], name: str) -> str | None:
    values = [v.strip() for v in query.get(name, []) if v.strip()]
    if len(values) > 1:
        raise IdentityError(name, "one value", f"{len(values)} values")
    if not values:
        return None
    value = values[0]
    if len(value) > MAX_IDENTITY_TEXT or not value.isprintable():
        raise IdentityError(name, f"at most {MAX_IDENTITY_TEXT} printable characters", describe(value[:80]))
    return value


def _uuid(value: str | None) -> str | None:
    if value is None:
        return None
    if not _UUID.fullmatch(value.lower()):
        raise IdentityError("uuid", "an SMBIOS UUID like 4c4c4544-0042-3510-8052-b2c04f4d3732", describe(value))
    return str(uuidlib.UUID(hex=value))


def first_match(assignments: Assignments, identity: Identity) -> Rule | None:
    """The first rule all of whose match keys match ``identity``, or None."""
    return next((r for r in assignments.rules if rule_matches(r, identity, assignments.groups)), None)


def rule_matches(rule: Rule, identity: Identity, groups: Mapping[str, frozenset[str]]) -> bool:
    """Whether every match key of ``rule`` matches; a key the machine did not report never matches."""
    for key, pattern in rule.match:
        if key == "group":
            members = groups.get(pattern, frozenset())
            ids = {m for m in (*identity.macs, identity.uuid, identity.serial) if m}
            if not {i.lower() for i in ids} & members:
                return False
        elif key == "mac":
            if not any(_glob(mac, pattern) for mac in identity.macs):
                return False
        else:
            value = getattr(identity, key)
            if value is None or not _glob(value, pattern):
                return False
    return True


def _glob(value: str, pattern: str) -> bool:
    # fnmatchcase on lowered text: fnmatch would follow the OS's case rules, and these are not file names.
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def decide(assignments: Assignments, identity: Identity, machine: MachineView, now: float) -> Decision:
    """What this machine gets now. An administrator's hold first, then the rules, then the unknown policy."""
    if machine.state == "cancelled":
        return Decision("cancelled", "an administrator cancelled this machine's deployment")
    state = effective_state(machine.state, machine.postponed_until, now)
    if state == "postponed" and machine.postponed_until is not None:
        wait = min(assignments.retry_after, max(1, math.ceil(machine.postponed_until - now)))
        return Decision("postponed", "an administrator postponed this machine's deployment", retry_after=wait,
                        until=machine.postponed_until)
    if not assignments.configured:
        if machine.running is not None and machine.running[1] == STATIC_RULE:
            return Decision("deploy", f"continuing deployment {machine.running[0]}", rule=STATIC_RULE,
                            reuse=machine.running[0])
        return Decision("lookup", "no assignments configured: this machine's task file", rule=STATIC_RULE,
                        candidates=static_candidates(identity))
    rule = first_match(assignments, identity)
    if rule is None:
        if assignments.unknown == "refuse":
            return Decision("refused", "no rule matches this machine and unknown machines are refused")
        if assignments.default_task is None:
            return Decision("none", "no rule matches this machine and there is no default task")
        rule = Rule(DEFAULT_RULE, assignments.default_task)
    if machine.running is not None and machine.running[1] == rule.name:
        return Decision("deploy", f"continuing deployment {machine.running[0]}", rule=rule.name, task=rule.task,
                        reuse=machine.running[0])
    if rule.once and rule.name in machine.completed_rules:
        return Decision("none", f"rule {rule.name} runs once and this machine has had it")
    if rule.approve and state != "approved":
        return Decision("pending", f"rule {rule.name} waits for an administrator's approval",
                        rule=rule.name, task=rule.task, retry_after=assignments.retry_after)
    return Decision("deploy", f"rule {rule.name}", rule=rule.name, task=rule.task)


def static_candidates(identity: Identity) -> tuple[str, ...]:
    """The task files a static DP holds for this machine, in the agent's order (peagent.deploy)."""
    names = [f"tasks/{mac.replace(':', '-')}.json" for mac in identity.macs]
    if identity.uuid is not None:
        names.append(f"tasks/{identity.uuid}.json")
    return (*names, DEFAULT_TASK)


def load_assignments(path: Path) -> Assignments:
    """Read and validate a configuration file; AssignmentError names the file and the field."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise AssignmentError(str(path), "a readable file", exc.strerror or str(exc)) from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise AssignmentError(str(path), "a JSON document", f"invalid JSON: {exc}") from None
    try:
        return parse_assignments(doc)
    except AssignmentError as exc:
        raise AssignmentError(f"{path}: {exc.field}", exc.expected, exc.found) from None


def parse_assignments(doc: object) -> Assignments:
    """Validate a configuration document (see the module's docstring)."""
    if not isinstance(doc, dict):
        raise AssignmentError("config", "a JSON object with unknown, default_task, groups and rules", describe(doc))
    for key in doc:
        if key not in _CONFIG_KEYS:
            raise AssignmentError(str(key), f"one of {', '.join(_CONFIG_KEYS)}", "an unknown field")
    unknown = doc.get("unknown", "default")
    if unknown not in UNKNOWN_POLICIES:
        raise AssignmentError("unknown", '"default" or "refuse"', describe(unknown))
    default_task = doc.get("default_task", DEFAULT_TASK)
    if default_task is not None:
        default_task = task_path(default_task, "default_task")
    retry_after = doc.get("retry_after", DEFAULT_RETRY_AFTER)
    if not isinstance(retry_after, int) or isinstance(retry_after, bool) or not 1 <= retry_after <= 3600:
        raise AssignmentError("retry_after", "whole seconds from 1 to 3600", describe(retry_after))
    groups = _groups(doc.get("groups", {}))
    rules = _rules(doc.get("rules", []), groups)
    return Assignments(unknown=unknown, default_task=default_task, groups=groups, rules=rules,
                       retry_after=retry_after, configured=True)


def task_path(value: object, where: str) -> str:
    """A task file's path: relative to DIR, in / separated parts, none of them . or .."""
    expected = "a path relative to the DP's directory, like tasks/win11.json"
    if not isinstance(value, str) or not value or "\\" in value or "\0" in value:
        raise AssignmentError(where, expected, describe(value))
    path = PurePosixPath(value)
    if path.is_absolute() or any(part in (".", "..") for part in value.split("/")):
        raise AssignmentError(where, expected + " (no .. and not absolute)", describe(value))
    return str(path)


def _groups(value: object) -> dict[str, frozenset[str]]:
    if not isinstance(value, dict):
        raise AssignmentError("groups", "an object: group name -> list of MACs, UUIDs and serials", describe(value))
    groups: dict[str, frozenset[str]] = {}
    for name, members in value.items():
        where = f"groups.{name}"
        if not _NAME.fullmatch(name):
            raise AssignmentError(where, "a group name of letters, digits and ._:-", describe(name))
        if not isinstance(members, list):
            raise AssignmentError(where, "a list of MACs, UUIDs and serials", describe(members))
        normalised = set()
        for i, member in enumerate(members):
            if not isinstance(member, str) or not member.strip():
                raise AssignmentError(f"{where}[{i}]", "a MAC, UUID or serial number", describe(member))
            normalised.add(_member(member))
        groups[name] = frozenset(normalised)
    return groups


def _member(text: str) -> str:
    """A group member as identities are compared: MACs with colons, UUIDs canonical, all lower case."""
    text = text.strip().lower()
    if _MAC.fullmatch(text):
        return text.replace("-", ":")
    if _UUID.fullmatch(text):
        return str(uuidlib.UUID(hex=text))
    return text


def _rules(value: object, groups: Mapping[str, frozenset[str]]) -> tuple[Rule, ...]:
    if not isinstance(value, list):
        raise AssignmentError("rules", "a list of rules", describe(value))
    rules: list[Rule] = []
    for i, item in enumerate(value):
        where = f"rules[{i}]"
        if not isinstance(item, dict):
            raise AssignmentError(where, "an object with name, match and task", describe(item))
        for key in item:
            if key not in _RULE_KEYS:
                raise AssignmentError(f"{where}.{key}", f"one of {', '.join(_RULE_KEYS)}", "an unknown field")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise AssignmentError(f"{where}.name", "a rule name: 1-64 letters, digits and ._:-", describe(name))
        if name in (DEFAULT_RULE, STATIC_RULE) or any(r.name == name for r in rules):
            raise AssignmentError(f"{where}.name", f"a name no other rule has (and not {DEFAULT_RULE!r} or "
                                  f"{STATIC_RULE!r})", describe(name))
        flags = {}
        for flag in ("once", "approve"):
            flags[flag] = item.get(flag, False)
            if not isinstance(flags[flag], bool):
                raise AssignmentError(f"{where}.{flag}", "true or false", describe(flags[flag]))
        rules.append(Rule(name=name, task=task_path(item.get("task"), f"{where}.task"),
                          match=_match(item.get("match"), f"{where}.match", groups), **flags))
    return tuple(rules)


def _match(value: object, where: str, groups: Mapping[str, frozenset[str]]) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not value:
        # An empty match would take every machine: say so with "*" rather than by accident.
        raise AssignmentError(where, f"an object with one or more of {', '.join(MATCH_KEYS)} "
                              '(to match every machine: {"mac": "*"})', describe(value))
    pairs = []
    for key, pattern in value.items():
        if key not in MATCH_KEYS:
            raise AssignmentError(f"{where}.{key}", f"one of {', '.join(MATCH_KEYS)}", "an unknown field")
        if not isinstance(pattern, str) or not pattern:
            raise AssignmentError(f"{where}.{key}", "a non-empty string (a shell glob, or a group's name)",
                                  describe(pattern))
        if key == "group" and pattern not in groups:
            known = ", ".join(sorted(groups)) or "none"
            raise AssignmentError(f"{where}.group", f"the name of a group in groups (known: {known})",
                                  describe(pattern))
        pairs.append((key, pattern))
    return tuple(pairs)
