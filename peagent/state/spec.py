"""The task's ``state`` section: who the new OS is told it is, and what it keeps from the old one.

::

    "state": {
      "os": "windows",                                  # optional: windows | linux (a WIM implies windows)
      "computer_name": "WS-{serial[-6:]}",              # templated per machine (peagent.state.template)
      "owner": "IT", "organization": "Example Corp",
      "product_key": "XXXXX-XXXXX-XXXXX-XXXXX-XXXXX",   # secret
      "admin_password": "...",                          # secret; Windows' Administrator
      "root_password_hash": "$6$...",                   # secret; Linux root's crypt(3) hash
      "timezone": "Europe/Berlin",                      # IANA or Windows name; converted per OS
      "domain": {"name": "corp.example.com", "ou": "OU=Workstations,DC=corp,DC=example,DC=com",
                 "username": "svc-join", "password": "..."},   # or "workgroup": "WORKGROUP"
      "network": [{"mac": "52:54:00:12:34:56", "addresses": ["192.168.10.50/24"],
                   "gateway": "192.168.10.1", "dns": ["192.168.10.2"], "search": ["corp.example.com"]}],
      "ssh_host_keys": "new",                           # new (default) | keep (the old OS's, captured)
      "ssh_authorized_keys": ["ssh-ed25519 AAAA... admin@example"],
      "first_boot_commands": ["..."],
      "migrate": ["computer_name", "user_name", "organization", "product_key", "admin_password",
                  "ip_address", "timezone", "domain"]   # what is captured from the old OS and kept
    }

Everything is checked here, before anything is written: a computer name Windows would refuse,
an address outside its subnet or a gateway outside every subnet of its interface, a domain join
without credentials, an unknown time zone. Secret values never appear in an error: the message
says what was wrong with them (their length, their shape), not what they were.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass

from peagent.errors import TaskError, describe
from peagent.schema import Fields
from peagent.state.model import DomainJoin, Interface, MachineState, Secret
from peagent.state.template import check_template
from peagent.state.timezones import IANA_TO_WINDOWS, WINDOWS_TO_IANA, iana_zone

OSES = ("windows", "linux")
SSH_KEY_POLICIES = ("new", "keep")
# What "migrate" may name, and the MachineState fields each carries over from the old OS.
MIGRATABLE: dict[str, tuple[str, ...]] = {
    "computer_name": ("computer_name", "dns_domain"),
    "user_name": ("owner",),
    "organization": ("organization",),
    "product_key": ("product_key",),
    "admin_password": ("root_password_hash",),  # Windows keeps hashes an answer file cannot carry
    "ip_address": ("interfaces",),
    "timezone": ("timezone",),
    "domain": ("domain", "workgroup"),
}
_MAC = re.compile(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}")
_PRODUCT_KEY = re.compile(r"[0-9A-Z]{5}(-[0-9A-Z]{5}){4}")
_DNS_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DN = re.compile(r"(?i)(OU|CN|DC)=[^,=]+(,\s*(OU|CN|DC)=[^,=]+)*")


@dataclass(frozen=True)
class StateSpec:
    given: MachineState  # the task's values; computer_name, owner, organization may hold templates
    migrate: tuple[str, ...] = ()
    os: str | None = None
    ssh_host_keys: str = "new"


def parse_state(obj: object, field: str = "state") -> StateSpec:
    f = Fields(obj, field)
    os_name = f.get("os", str, f"one of {', '.join(OSES)}", None)
    if os_name is not None and os_name not in OSES:
        raise TaskError(f"{field}.os", f"one of {', '.join(OSES)}", describe(os_name))
    texts = {}
    for key, what in (("computer_name", "the computer name (a template: {serial}, {mac}, ...)"),
                      ("owner", "the registered owner"), ("organization", "the registered organisation"),
                      ("workgroup", "a workgroup name")):
        value = f.get(key, str, what, None)
        if value is not None:
            check_template(value, f"{field}.{key}")
        texts[key] = value
    if texts["workgroup"] is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,14}", texts["workgroup"]):
        raise TaskError(f"{field}.workgroup", "1-15 letters, digits, space, _ . -", describe(texts["workgroup"]))
    product_key = _secret(f, "product_key", "a product key XXXXX-XXXXX-XXXXX-XXXXX-XXXXX (letters and digits)")
    if product_key is not None and not _PRODUCT_KEY.fullmatch(product_key.reveal()):
        raise TaskError(f"{field}.product_key", "5 groups of 5 upper-case letters or digits joined by '-'",
                        f"a string of {len(product_key.reveal())} characters (not shown: it is a secret)")
    admin = _secret(f, "admin_password", "the administrator password (1-127 characters)")
    if admin is not None and not 0 < len(admin.reveal()) <= 127:
        raise TaskError(f"{field}.admin_password", "1-127 characters",
                        f"{len(admin.reveal())} characters (not shown: it is a secret)")
    root_hash = _secret(f, "root_password_hash", "root's password as a crypt(3) hash ($6$..., $y$...)")
    if root_hash is not None and not re.fullmatch(r"\$[0-9a-z]+\$[^:\s]+", root_hash.reveal()):
        raise TaskError(f"{field}.root_password_hash", "a crypt(3) hash such as $6$salt$hash or $y$... (never a "
                        "plain password)", "something else (not shown: it is a secret)")
    timezone = f.get("timezone", str, "a time zone: IANA (Europe/Berlin) or Windows (W. Europe Standard Time)", None)
    if timezone is not None:
        check_timezone(timezone, f"{field}.timezone")
    domain = f.get("domain", dict, "an object with name, username, password and optionally ou", None)
    if domain is not None and texts["workgroup"] is not None:
        raise TaskError(f"{field}.workgroup", "either domain or workgroup (Windows joins one or the other)", "both")
    network = f.get("network", list, "a list of interfaces, each with mac and addresses or dhcp", [])
    ssh = f.get("ssh_host_keys", str, f"one of {', '.join(SSH_KEY_POLICIES)}", "new")
    if ssh not in SSH_KEY_POLICIES:
        raise TaskError(f"{field}.ssh_host_keys", f"one of {', '.join(SSH_KEY_POLICIES)}", describe(ssh))
    authorized = _strings(f, "ssh_authorized_keys", "a list of SSH public keys (ssh-ed25519 AAAA...)")
    for i, key in enumerate(authorized):
        if not re.fullmatch(r"(ssh-|ecdsa-|sk-)\S+ [A-Za-z0-9+/=]+( .*)?", key) or "\n" in key:
            raise TaskError(f"{field}.ssh_authorized_keys[{i}]", "one SSH public key line (ssh-ed25519 AAAA...)",
                            describe(key))
    commands = _strings(f, "first_boot_commands", "a list of commands run once at first boot")
    migrate = _strings(f, "migrate", f"a list of what to keep from the old OS: {', '.join(MIGRATABLE)}")
    for i, name in enumerate(migrate):
        if name not in MIGRATABLE:
            close = difflib.get_close_matches(name, MIGRATABLE, n=1)
            raise TaskError(f"{field}.migrate[{i}]", f"one of {', '.join(MIGRATABLE)}",
                            describe(name) + (f" (did you mean {close[0]!r}?)" if close else ""))
    f.done()
    given = MachineState(
        computer_name=texts["computer_name"], owner=texts["owner"], organization=texts["organization"],
        workgroup=texts["workgroup"], product_key=product_key, admin_password=admin,
        root_password_hash=root_hash, timezone=timezone,
        domain=None if domain is None else _domain(domain, f"{field}.domain"),
        interfaces=tuple(_interface(item, f"{field}.network[{i}]") for i, item in enumerate(network)),
        ssh_authorized_keys=tuple(authorized), first_boot_commands=tuple(commands))
    macs = [i.mac for i in given.interfaces]
    for i, mac in enumerate(macs):
        if mac in macs[:i]:
            raise TaskError(f"{field}.network[{i}].mac", "each MAC once", f"{mac} again")
    return StateSpec(given=given, migrate=tuple(dict.fromkeys(migrate)), os=os_name, ssh_host_keys=ssh)


def check_timezone(name: str, field: str) -> None:
    """A zone both kinds of OS can be given: known to CLDR's Windows<->IANA table (or UTC)."""
    if iana_zone(name) is None:
        close = difflib.get_close_matches(name, [*WINDOWS_TO_IANA, *IANA_TO_WINDOWS], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TaskError(field, "a time zone: IANA (Europe/Berlin) or Windows (W. Europe Standard Time)",
                        f"unknown zone {describe(name)}{hint}")


def _secret(f: Fields, key: str, expected: str) -> Secret | None:
    if key in f.obj and not isinstance(f.obj[key], str):
        f.known.append(key)
        # describe() would show the value: say only what kind of thing it was.
        raise TaskError(f.field(key), expected, f"a {type(f.obj[key]).__name__} (not shown: it is a secret)")
    value = f.get(key, str, expected, None)
    if value == "":
        raise TaskError(f.field(key), expected, "an empty string")
    return None if value is None else Secret(value)


def _strings(f: Fields, key: str, expected: str) -> list[str]:
    items = f.get(key, list, expected, [])
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise TaskError(f"{f.field(key)}[{i}]", "a non-empty string", describe(item))
    return items


def _domain(obj: dict, field: str) -> DomainJoin:
    f = Fields(obj, field)
    name = f.get("name", str, "the domain's DNS name (corp.example.com)")
    if not _DNS_NAME.fullmatch(name):
        raise TaskError(f"{field}.name", "a DNS name such as corp.example.com", describe(name))
    username = f.get("username", str, "the account allowed to join machines", None)
    password = _secret(f, "password", "the joining account's password")
    if username is None or password is None:
        missing = " and ".join(k for k, v in (("username", username), ("password", password)) if v is None)
        raise TaskError(f"{field}.{'username' if username is None else 'password'}",
                        "credentials to join the domain with (username and password)", f"no {missing}")
    ou = f.get("ou", str, "the organisational unit as a full DN (OU=Workstations,DC=corp,DC=example,DC=com)", None)
    if ou is not None and not _DN.fullmatch(ou):
        raise TaskError(f"{field}.ou", "a full LDAP DN such as OU=Workstations,DC=corp,DC=example,DC=com",
                        describe(ou))
    f.done()
    return DomainJoin(domain=name, username=username, password=password, ou=ou)


def _interface(obj: object, field: str) -> Interface:
    f = Fields(obj, field)
    mac = f.get("mac", str, "the interface's MAC address (52:54:00:12:34:56)")
    if not _MAC.fullmatch(mac):
        raise TaskError(f"{field}.mac", "a MAC address like 52:54:00:12:34:56", describe(mac))
    addresses = _strings(f, "addresses", "a list of addresses with prefix length (192.168.10.50/24)")
    dhcp = f.get("dhcp", bool, "true or false", not addresses)
    if dhcp and addresses:
        raise TaskError(f"{field}.dhcp", "false when addresses are given (or no addresses for DHCP)", "true")
    nets = []
    for i, text in enumerate(addresses):
        try:
            if "/" not in text:
                raise ValueError("no prefix length")
            nets.append(ipaddress.ip_interface(text))
        except ValueError:
            raise TaskError(f"{field}.addresses[{i}]", "an address with prefix length (192.168.10.50/24)",
                            describe(text)) from None
        if nets[-1].ip == nets[-1].network.network_address and nets[-1].network.prefixlen < 31:
            raise TaskError(f"{field}.addresses[{i}]", "a host address, not the network's own",
                            f"{text} (the network address of {nets[-1].network})")
    gateways = {}
    for key, version in (("gateway", 4), ("gateway6", 6)):
        gateways[key] = f.get(key, str, f"an IPv{version} address inside one of the interface's subnets", None)
        if gateways[key] is not None:
            _check_gateway(gateways[key], version, nets, f"{field}.{key}")
    dns = _strings(f, "dns", "a list of DNS server addresses")
    for i, text in enumerate(dns):
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise TaskError(f"{field}.dns[{i}]", "an IP address", describe(text)) from None
    search = _strings(f, "search", "a list of DNS search domains")
    for i, text in enumerate(search):
        if not _DNS_NAME.fullmatch(text):
            raise TaskError(f"{field}.search[{i}]", "a DNS domain such as corp.example.com", describe(text))
    f.done()
    return Interface(mac=mac.lower().replace("-", ":"), dhcp=dhcp, addresses=tuple(str(n) for n in nets),
                     gateway=gateways["gateway"], gateway6=gateways["gateway6"], dns=tuple(dns), search=tuple(search))


def _check_gateway(text: str, version: int, nets: list, field: str) -> None:
    try:
        gateway = ipaddress.ip_address(text)
    except ValueError:
        raise TaskError(field, f"an IPv{version} address", describe(text)) from None
    if gateway.version != version:
        raise TaskError(field, f"an IPv{version} address", f"{text} (IPv{gateway.version})")
    same = [n.network for n in nets if n.version == version]
    if not same:
        raise TaskError(field, f"a gateway with an IPv{version} address on the interface to reach it",
                        f"{text}, but no IPv{version} address in addresses")
    if not any(gateway in net for net in same):
        raise TaskError(field, f"an address inside {' or '.join(str(n) for n in same)} (the interface's subnets)",
                        f"{text}, outside them")
    if any(gateway == n.ip for n in nets):
        raise TaskError(field, "another host's address (the router's)", f"{text}, the interface's own address")
