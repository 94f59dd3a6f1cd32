from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peagent.state.model import Secret
from peagent.state.password import decode_password, encode_password

# Verbatim from Microsoft's unattend reference (U/microsoft-windows-shell-setup-useraccounts and
# U/...-localaccounts-localaccount-password): both are the password "pw".
MS_ADMINISTRATOR_PASSWORD = "cAB3AEEAZABtAGkAbgBpAHMAdAByAGEAdABvAHIAUABhAHMAcwB3AG8AcgBkAA=="
MS_LOCAL_ACCOUNT_PASSWORD = "cAB3AFAAYQBzAHMAdwBvAHIAZAA"  # printed without its padding


def test_microsofts_administrator_example_encodes_and_decodes():
    assert encode_password(Secret("pw"), "AdministratorPassword") == MS_ADMINISTRATOR_PASSWORD
    assert decode_password(MS_ADMINISTRATOR_PASSWORD, "AdministratorPassword") == "pw"


def test_microsofts_local_account_example_decodes_without_padding():
    assert decode_password(MS_LOCAL_ACCOUNT_PASSWORD, "Password") == "pw"
    assert encode_password(Secret("pw"), "Password") == MS_LOCAL_ACCOUNT_PASSWORD + "="


def test_research_example_value():
    # The value in the research notes' minimal unattend.xml, said to be P@ssw0rd!.
    expected = "UABAAHMAcwB3ADAAcgBkACEAQQBkAG0AaQBuAGkAcwB0AHIAYQB0AG8AcgBQAGEAcwBzAHcAbwByAGQA"
    assert encode_password(Secret("P@ssw0rd!"), "AdministratorPassword") == expected


@pytest.mark.parametrize("password", ["", "Pässwörd€", "密码", "emoji 🔑 key", "a\"<&>'b"])
@pytest.mark.parametrize("kind", ["AdministratorPassword", "Password"])
def test_round_trip_non_ascii(password, kind):
    encoded = encode_password(Secret(password), kind)
    assert encoded.isascii()
    assert decode_password(encoded, kind) == password


@given(st.text())
def test_round_trip_any_text(password):
    assert decode_password(encode_password(Secret(password), "Password"), "Password") == password


def test_utf16_surrogate_pairs_are_two_code_units():
    raw = base64.b64decode(encode_password(Secret("🔑"), "Password"))
    assert raw[:4] == "🔑".encode("utf-16-le") and len(raw) == 4 + 2 * len("Password")


def test_wrong_suffix_is_refused_without_showing_the_password():
    encoded = encode_password(Secret("hunter2"), "Password")
    with pytest.raises(ValueError, match="end with 'AdministratorPassword'") as caught:
        decode_password(encoded, "AdministratorPassword")
    assert "hunter2" not in str(caught.value)


def test_administrator_value_read_as_password_keeps_the_rest():
    # Every AdministratorPassword value also ends in "Password", as Setup would see it.
    assert decode_password(MS_ADMINISTRATOR_PASSWORD, "Password") == "pwAdministrator"


@pytest.mark.parametrize("value", ["not base64!", "cAB3A", base64.b64encode(b"\x00\xd8").decode()])
def test_garbage_is_refused(value):
    with pytest.raises(ValueError, match="expected base64 of UTF-16LE text"):
        decode_password(value, "Password")


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="expected one of AdministratorPassword, Password, found 'AutoLogon'"):
        encode_password(Secret("x"), "AutoLogon")
    with pytest.raises(ValueError, match="found 'OfflineAdministratorPassword'"):
        decode_password(MS_ADMINISTRATOR_PASSWORD, "OfflineAdministratorPassword")
