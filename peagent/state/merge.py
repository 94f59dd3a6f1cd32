"""Task values over captured ones: the state the new OS is given.

The task decides. A property the task sets wins; a property the task lists in ``migrate`` and
leaves unset comes from the old OS, when the capture found it; anything else stays as the image
has it. Two kinds of data need more than "task wins":

* interfaces are merged per MAC, and only the old OS's static interfaces whose MAC this machine
  still has are kept (a captured address for a NIC that is gone would configure nothing, or
  worse, the wrong NIC after a board swap);
* a captured domain membership has no credentials (no OS keeps the joining password), so it
  cannot be re-joined by itself: it is reported, and the task must give ``state.domain``.

:func:`merge` is pure; its :class:`Merged` result says where each property came from, for the
plan and the status, without ever showing a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from peagent.state.model import Captured, Interface, MachineState, Secret
from peagent.state.spec import MIGRATABLE, StateSpec
from peagent.state.template import Identity, check_computer_name, render


@dataclass(frozen=True)
class Merged:
    state: MachineState
    origins: dict[str, str]  # field -> "task" or the capture's source
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """One line per property set, with where it came from; secrets shown as such."""
        out = []
        for name in self.state.set_fields():
            value = getattr(self.state, name)
            shown = _show(value)
            out.append(f"{name}: {shown} (from {self.origins.get(name, 'task')})")
        return out + [f"note: {n}" for n in self.notes]


def resolve(spec: StateSpec, identity: Identity, os_name: str | None) -> tuple[MachineState, list[str]]:
    """The task's values for this machine: templates filled, the computer name checked (plan time)."""
    given = spec.given
    changes = {}
    for name in ("computer_name", "owner", "organization"):
        value = getattr(given, name)
        if value is not None:
            changes[name] = render(value, identity, f"state.{name}")
    warnings = []
    if changes.get("computer_name") is not None:
        warnings = check_computer_name(changes["computer_name"], os_name, "state.computer_name")
    return given.but(**changes), warnings


def merge(given: MachineState, spec: StateSpec, captured: Captured | None, macs: Sequence[str]) -> Merged:
    """The task's (resolved) values over what ``migrate`` takes from the capture."""
    origins = {name: "task" for name in given.set_fields()}
    notes: list[str] = []
    state = given
    old = captured.state if captured is not None else MachineState()
    source = captured.source if captured is not None else "the old OS"
    if spec.migrate and captured is None:
        notes.append(f"nothing captured (no old OS found), so nothing migrates: {', '.join(spec.migrate)}")
    elif captured is not None:
        for property_name in spec.migrate:
            for name in MIGRATABLE[property_name]:
                state, taken, note = _take(state, old, name, captured.os, macs)
                if taken:
                    origins[name] = source
                if note:
                    notes.append(note)
        if spec.ssh_host_keys == "keep":
            if old.ssh_host_keys:
                state = state.but(ssh_host_keys=old.ssh_host_keys)
                origins["ssh_host_keys"] = source
            else:
                notes.append(f"ssh_host_keys keep: {source} had none; new keys are made at first boot")
        notes += list(captured.notes)
    if state.domain is None and old.domain is not None and "domain" in spec.migrate:
        notes.append(f"the old OS was joined to {old.domain.domain}; joining again needs credentials: give "
                     "state.domain (the machine is not joined otherwise)")
    return Merged(state, origins, tuple(notes))


def _take(state: MachineState, old: MachineState, name: str, os_name: str,
          macs: Sequence[str]) -> tuple[MachineState, bool, str]:
    """Carry one field over from the old state unless the task set it; (state, taken, note)."""
    if name == "interfaces":
        return _take_interfaces(state, old, macs)
    if name == "domain":
        # Without credentials a captured domain cannot be joined: see merge().
        return state, False, ""
    if getattr(state, name) not in (None, ()):
        return state, False, ""
    if name == "workgroup" and state.domain is not None:
        return state, False, ""  # the task joins a domain: the old workgroup does not apply
    value = getattr(old, name)
    if value in (None, ()):
        if name == "root_password_hash" and os_name == "windows":
            return state, False, ("admin_password cannot migrate from Windows (it keeps only hashes that an "
                                  "answer file cannot carry): give state.admin_password")
        quiet = {"dns_domain", "workgroup"}  # companions of another property: silent when absent
        return state, False, "" if name in quiet else f"migrate {name}: the old OS had none"
    return state.but(**{name: value}), True, ""


def _take_interfaces(state: MachineState, old: MachineState, macs: Sequence[str]) -> tuple[MachineState, bool, str]:
    mine = {m.lower() for m in macs}
    given = {i.mac for i in state.interfaces}
    kept: list[Interface] = []
    dropped = []
    for iface in old.interfaces:
        if iface.dhcp and not iface.addresses:
            continue  # DHCP is every image's default: nothing to carry
        if iface.mac is None or iface.mac not in mine:
            dropped.append(iface.mac or iface.name or "?")
        elif iface.mac not in given:
            kept.append(iface)
    note = (f"ip_address: the old OS's static settings for {', '.join(dropped)} are not kept (no such NIC on this "
            "machine, or no MAC in the old configuration)") if dropped else ""
    if not kept:
        return state, False, note
    return state.but(interfaces=(*state.interfaces, *kept)), True, note


def _show(value: object) -> str:
    if isinstance(value, Secret):
        return str(value)
    if isinstance(value, tuple):
        return ", ".join(_show(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        parts = [f"{f.name}={_show(getattr(value, f.name))}" for f in fields(value)  # type: ignore[arg-type]
                 if getattr(value, f.name) not in (None, ())]
        return "{" + ", ".join(parts) + "}"
    return str(value)
