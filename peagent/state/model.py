"""What a machine is told about itself after the image is down: its state, in one shape for every OS.

A :class:`MachineState` is the common currency of the state package. The capture modules read one
out of the old OS (peagent.state.capture_windows, capture_linux), the task's ``state`` section
gives another (peagent.state.spec), peagent.state.merge combines them, and the writers turn the
result into what the new OS reads on its first boot: unattend.xml or sysprep.inf for Windows,
hostname, machine-id, network and a cloud-init seed for Linux.

Secrets (passwords, product keys, private keys) are :class:`Secret` values: their ``repr`` and
``str`` are a placeholder, so a state that ends up in a log line, a plan, a status event or an
assertion message shows that a secret is there, never what it is. Only a writer that must put
the secret into the new OS calls :meth:`Secret.reveal`. :meth:`MachineState.public` is the
document with every secret replaced by a placeholder: what may go to the DP, a plan or a record
(peagent.state.document keeps the whole capture, secrets included, in the PE's memory only).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

REDACTED = "<secret>"


@dataclass(frozen=True)
class Secret:
    """A value that must never be shown: its repr and str are a placeholder."""

    value: str = field(repr=False)

    def reveal(self) -> str:
        return self.value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __format__(self, spec: str) -> str:
        return REDACTED


@dataclass(frozen=True)
class Interface:
    """One network interface's configuration, keyed by MAC (names differ between OSes).

    ``addresses`` are CIDR strings (``192.168.10.50/24``, ``2001:db8::5/64``); no address and
    ``dhcp`` True means DHCP. ``name`` is the name the OS it was captured from used, if any.
    """

    mac: str | None  # lower case, colons: 52:54:00:12:34:56; None only for a captured config without one
    dhcp: bool = True
    addresses: tuple[str, ...] = ()
    gateway: str | None = None
    gateway6: str | None = None
    dns: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    name: str | None = None

    @property
    def windows_id(self) -> str | None:
        """The MAC as unattend.xml's Identifier spells it: upper case with dashes."""
        return self.mac.replace(":", "-").upper() if self.mac else None


@dataclass(frozen=True)
class DomainJoin:
    """Join an Active Directory domain on first boot (Windows) with these credentials."""

    domain: str  # DNS name, corp.example.com
    username: str | None = None
    password: Secret | None = None
    ou: str | None = None  # full LDAP DN of the organisational unit


@dataclass(frozen=True)
class HostKey:
    """An SSH host key pair, as the files /etc/ssh/ssh_host_<kind>_key[.pub] hold it."""

    kind: str  # ed25519, ecdsa, rsa
    private: Secret
    public: str


@dataclass(frozen=True)
class MachineState:
    """Who the machine is. Every field is optional: None means "not set here"."""

    computer_name: str | None = None
    domain: DomainJoin | None = None
    workgroup: str | None = None
    owner: str | None = None  # RegisteredOwner; "user name" in the migrate list
    organization: str | None = None
    product_key: Secret | None = None
    admin_password: Secret | None = None  # plain text from the task; Windows only
    root_password_hash: Secret | None = None  # crypt(3) hash, from a task or captured from /etc/shadow
    timezone: str | None = None  # a Windows name ("W. Europe Standard Time") or an IANA one ("Europe/Berlin")
    interfaces: tuple[Interface, ...] = ()
    ssh_host_keys: tuple[HostKey, ...] = ()
    ssh_authorized_keys: tuple[str, ...] = ()  # root's (Linux) authorized_keys, public
    first_boot_commands: tuple[str, ...] = ()
    dns_domain: str | None = None  # Linux: the domain of the FQDN in /etc/hosts

    def public(self) -> dict[str, Any]:
        """The state as JSON-able data with every secret replaced by a placeholder."""
        return _plain(self, reveal=False)

    def set_fields(self) -> list[str]:
        """The names of the fields that hold something, in declaration order."""
        return [f.name for f in fields(self) if getattr(self, f.name) not in (None, ())]

    def but(self, **changes: Any) -> MachineState:
        return replace(self, **changes)


def _plain(value: Any, *, reveal: bool) -> Any:
    if isinstance(value, Secret):
        return value.reveal() if reveal else REDACTED
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name), reveal=reveal) for f in fields(value)
                if getattr(value, f.name) not in (None, ())}
    if isinstance(value, tuple | list):
        return [_plain(v, reveal=reveal) for v in value]
    return value


@dataclass(frozen=True)
class Captured:
    """What a capture read out of an old OS, and what it could not."""

    os: str  # "windows" or "linux"
    source: str  # where it was read, for the plan and status: "Windows on /dev/sda3"
    state: MachineState
    notes: tuple[str, ...] = ()  # what was not captured, and why
