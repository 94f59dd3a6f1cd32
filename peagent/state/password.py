"""How unattend.xml hides a password: base64 of UTF-16LE text, with the setting's name appended.

An answer file may carry a password in the clear (``<PlainText>true</PlainText>``) or "hidden"
(``<PlainText>false</PlainText>``). Hidden is not encrypted: Windows System Image Manager writes
``base64(UTF-16LE(password + suffix))``, where the suffix is the name of the setting that holds
it: ``AdministratorPassword`` for Shell-Setup/UserAccounts/AdministratorPassword, ``Password``
for LocalAccount and AutoLogon passwords. Setup decodes it, checks and strips the suffix. Anyone
with the file can do the same, so hiding only keeps the password from a casual glance (and from
``grep``); the answer file must still be treated as a secret and deleted after use.

The rule is confirmed by decoding Microsoft's own examples (learn.microsoft.com,
windows-hardware/customize/desktop/unattend): ``microsoft-windows-shell-setup-useraccounts``
shows ``cAB3AEEAZABtAGkAbgBpAHMAdAByAGEAdABvAHIAUABhAHMAcwB3AG8AcgBkAA==``, which is
``pw`` + ``AdministratorPassword``; ``...-useraccounts-localaccounts-localaccount-password``
shows ``cAB3AFAAYQBzAHMAdwBvAHIAZAA`` (``pw`` + ``Password``, printed without its ``=`` padding,
which is why :func:`decode_password` tolerates a missing padding).
"""

from __future__ import annotations

import base64
import binascii

from peagent.state.model import Secret

KINDS = ("AdministratorPassword", "Password")


def encode_password(secret: Secret, kind: str) -> str:
    """The ``<Value>`` for a password with ``<PlainText>false</PlainText>``; kind names the setting."""
    _check_kind(kind)
    return base64.b64encode((secret.reveal() + kind).encode("utf-16-le")).decode("ascii")


def decode_password(value: str, kind: str) -> str:
    """The password in a hidden ``<Value>``, for the setting named kind.

    Raises ValueError if the value is not base64 of UTF-16LE text ending in kind. Note that every
    ``AdministratorPassword`` value also ends in ``Password``: decoding one as ``Password`` yields
    the password followed by ``Administrator``, exactly as Setup would read it there.
    """
    _check_kind(kind)
    try:
        raw = base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), validate=True)
        text = raw.decode("utf-16-le")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        # No detail from the value itself: it may be a secret.
        raise ValueError("hidden password: expected base64 of UTF-16LE text, found something else") from None
    if not text.endswith(kind):
        raise ValueError(f"hidden password: expected the text to end with {kind!r}, found another ending "
                         "(a value made for another setting, or not hidden at all)")
    return text[: -len(kind)]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"password kind: expected one of {', '.join(KINDS)}, found {kind!r}")
