"""The task's state section: every bad value refused at plan time, naming the field, never a secret."""

from __future__ import annotations

import pytest

from peagent.errors import TaskError
from peagent.state.model import Secret
from peagent.state.spec import parse_state

NIC = {"mac": "52:54:00:12:34:56", "addresses": ["192.168.10.50/24"], "gateway": "192.168.10.1",
       "dns": ["192.168.10.2"], "search": ["corp.example.com"]}


def refused(doc: dict) -> TaskError:
    with pytest.raises(TaskError) as info:
        parse_state(doc)
    return info.value


def test_a_full_section_is_read_into_the_model() -> None:
    spec = parse_state({
        "os": "windows", "computer_name": "WS-{serial[-6:]}", "owner": "IT", "organization": "Example Corp",
        "product_key": "ABCDE-FGHIJ-KLMNO-PQRST-UVWXY", "admin_password": "P@ssw0rd!",
        "timezone": "W. Europe Standard Time",
        "domain": {"name": "corp.example.com", "username": "svc-join", "password": "JoinSecret",
                   "ou": "OU=Workstations,DC=corp,DC=example,DC=com"},
        "network": [NIC, {"mac": "52-54-00-AA-BB-CC"}],
        "first_boot_commands": ["echo hi"], "migrate": ["computer_name", "ip_address", "computer_name"]})
    g = spec.given
    assert (g.computer_name, g.owner, g.organization, g.timezone) == ("WS-{serial[-6:]}", "IT", "Example Corp",
                                                                      "W. Europe Standard Time")
    assert isinstance(g.product_key, Secret) and g.product_key.reveal() == "ABCDE-FGHIJ-KLMNO-PQRST-UVWXY"
    assert g.domain is not None and g.domain.password is not None and g.domain.password.reveal() == "JoinSecret"
    static, dhcp = g.interfaces
    assert (static.mac, static.dhcp, static.addresses, static.gateway) == ("52:54:00:12:34:56", False,
                                                                           ("192.168.10.50/24",), "192.168.10.1")
    assert (dhcp.mac, dhcp.dhcp, dhcp.addresses) == ("52:54:00:aa:bb:cc", True, ())
    assert spec.migrate == ("computer_name", "ip_address") and spec.os == "windows"
    shown = repr(spec)
    for secret in ("P@ssw0rd!", "JoinSecret", "ABCDE-FGHIJ"):
        assert secret not in shown


@pytest.mark.parametrize(("doc", "field", "found"), [
    ({"network": [{**NIC, "gateway": "192.168.11.1"}]}, "state.network[0].gateway", "192.168.11.1, outside them"),
    ({"network": [{**NIC, "gateway": "192.168.10.50"}]}, "state.network[0].gateway", "the interface's own address"),
    ({"network": [{**NIC, "addresses": ["192.168.10.50"]}]}, "state.network[0].addresses[0]", '"192.168.10.50"'),
    ({"network": [{**NIC, "addresses": ["192.168.10.0/24"]}]}, "state.network[0].addresses[0]", "network address"),
    ({"network": [{**NIC, "addresses": ["2001:db8::5/64"]}]}, "state.network[0].gateway", "no IPv4 address"),
    ({"network": [{**NIC, "gateway6": "2001:db8:1::1", "addresses": ["192.168.10.50/24", "2001:db8::5/64"]}]},
     "state.network[0].gateway6", "outside them"),
    ({"network": [{**NIC, "dns": ["dns.example.com"]}]}, "state.network[0].dns[0]", '"dns.example.com"'),
    ({"network": [{**NIC, "dhcp": True}]}, "state.network[0].dhcp", "true"),
    ({"network": [NIC, NIC]}, "state.network[1].mac", "52:54:00:12:34:56 again"),
    ({"network": [{**NIC, "mac": "52:54:00:12:34"}]}, "state.network[0].mac", '"52:54:00:12:34"'),
    ({"timezone": "Europe/Berln"}, "state.timezone", "did you mean 'Europe/Berlin'?"),
    ({"timezone": "Mars Standard Time"}, "state.timezone", "unknown zone"),
    ({"domain": {"name": "corp.example.com", "username": "svc"}}, "state.domain.password", "no password"),
    ({"domain": {"name": "corp.example.com"}}, "state.domain.username", "no username and password"),
    ({"domain": {"name": "corp.example.com", "username": "u", "password": "p", "ou": "Workstations"}},
     "state.domain.ou", '"Workstations"'),
    ({"domain": {"name": "corp_example", "username": "u", "password": "p"}}, "state.domain.name", "corp_example"),
    ({"domain": {"name": "corp.example.com", "username": "u", "password": "p"}, "workgroup": "WG"},
     "state.workgroup", "both"),
    ({"os": "macos"}, "state.os", '"macos"'),
    ({"migrate": ["hostname"]}, "state.migrate[0]", '"hostname"'),
    ({"migrate": ["ip_adress"]}, "state.migrate[0]", "did you mean 'ip_address'?"),
    ({"computer_name": "WS-{room}"}, "state.computer_name", "{room}"),
    ({"computer_name": "WS-{serial"}, "state.computer_name", "stray brace"),
    ({"ssh_host_keys": "reuse"}, "state.ssh_host_keys", '"reuse"'),
    ({"ssh_authorized_keys": ["not a key"]}, "state.ssh_authorized_keys[0]", '"not a key"'),
    ({"hostname": "x"}, "state.hostname", "unknown field"),
])
def test_bad_values_are_refused_naming_the_field(doc: dict, field: str, found: str) -> None:
    error = refused(doc)
    assert error.field == field
    assert found in error.found


@pytest.mark.parametrize(("doc", "field", "secret"), [
    ({"product_key": "ABCDE-FGHIJ-KLMNO-PQRST"}, "state.product_key", "ABCDE-FGHIJ-KLMNO-PQRST"),
    ({"product_key": "abcde-fghij-klmno-pqrst-uvwxy"}, "state.product_key", "abcde-fghij"),
    ({"admin_password": "x" * 128}, "state.admin_password", "x" * 128),
    ({"admin_password": 12345678}, "state.admin_password", "12345678"),
    ({"root_password_hash": "hunter2"}, "state.root_password_hash", "hunter2"),
    ({"domain": {"name": "corp.example.com", "username": "u", "password": ["Sup3rSecret"]}}, "state.domain.password",
     "Sup3rSecret"),
])
def test_a_bad_secret_is_refused_without_being_shown(doc: dict, field: str, secret: str) -> None:
    error = refused(doc)
    assert error.field == field
    assert secret not in str(error)
    assert "not shown: it is a secret" in str(error)


def test_ipv6_with_its_own_gateway() -> None:
    spec = parse_state({"network": [{"mac": "52:54:00:12:34:56", "addresses": ["192.168.10.50/24", "2001:db8::5/64"],
                                     "gateway": "192.168.10.1", "gateway6": "2001:db8::1"}]})
    assert spec.given.interfaces[0].gateway6 == "2001:db8::1"
