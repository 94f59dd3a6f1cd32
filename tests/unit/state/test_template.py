"""Per-machine templates and the computer-name rules of each OS."""

from __future__ import annotations

import pytest

from peagent.errors import TaskError
from peagent.inventory import Dmi, Inventory, Nic
from peagent.state.template import Identity, check_computer_name, render

IDENTITY = Identity(serial="PF3A 9Z/42", asset_tag="IT-000731", uuid="4c4c4544-0042", mac="525400123456",
                    model="ThinkPad T14", vendor="LENOVO")


@pytest.mark.parametrize(("template", "expected"), [
    ("WS-{serial}", "WS-PF3A9Z42"),  # space and slash dropped
    ("WS-{serial[-4:]}", "WS-9Z42"),
    ("{asset_tag}", "IT-000731"),
    ("pc-{mac[6:]}", "pc-123456"),
    ("{vendor[:3]}-{model}", "LEN-ThinkPadT14"),
    ("plain", "plain"),
])
def test_placeholders_are_filled_from_the_machine(template: str, expected: str) -> None:
    assert render(template, IDENTITY, "state.computer_name") == expected


def test_a_value_the_machine_lacks_is_an_error_not_an_empty_name() -> None:
    with pytest.raises(TaskError) as info:
        render("WS-{asset_tag}", Identity(serial="X"), "state.computer_name")
    assert info.value.field == "state.computer_name" and "asset_tag" in str(info.value)


def test_identity_from_an_inventory_uses_lenovos_product_version_as_the_model() -> None:
    inv = Inventory(nics=(Nic("eth0", "52:54:00:12:34:56"),),
                    dmi=Dmi(sys_vendor="LENOVO", product_name="20S0CTO1WW", product_version="ThinkPad T14 Gen 1",
                            product_serial="PF3A9Z42", chassis_asset_tag="IT-1"))
    ident = Identity.of(inv)
    assert (ident.model, ident.mac, ident.serial, ident.asset_tag) == ("ThinkPad T14 Gen 1", "525400123456",
                                                                       "PF3A9Z42", "IT-1")
    assert Identity.of(Inventory(dmi=Dmi(sys_vendor="Dell Inc.", product_name="Latitude 7420"))).model == \
        "Latitude 7420"


@pytest.mark.parametrize(("name", "why"), [
    ("WORKSTATION-00042", "more than 15 characters"),
    ("WS.0042", "the characters '.'"),
    ("WS 42", "the characters ' '"),
    ("12345", "only digits"),
])
def test_windows_names_windows_refuses(name: str, why: str) -> None:
    with pytest.raises(TaskError) as info:
        check_computer_name(name, "windows", "state.computer_name")
    assert why in info.value.found
    assert check_computer_name(name, None, "state.computer_name")[0].endswith(f"would be refused by a Windows image "
                                                                              f"({why})")


def test_linux_takes_long_names_but_not_bad_labels() -> None:
    assert check_computer_name("workstation-00042", "linux", "f") == []
    with pytest.raises(TaskError):
        check_computer_name("-ws", "linux", "f")
    assert check_computer_name("WS-0042", None, "f") == []
