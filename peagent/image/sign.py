"""Signing manifests with ed25519, and deciding whether to trust one.

A manifest names and hashes everything else of an image (docs/image-format.md), so signing its
exact bytes signs the whole image. The signature travels beside it as one line::

    ed25519 <key id> <base64 signature>

where the key id is the first 16 hex digits of the sha256 of the raw 32-byte public key. Public
keys are kept as one line of base64 (the raw key), which fits on a kernel command line
(``peagent.key=``) as well as in a file (``/etc/peagent/keys/*.pub``).

:func:`check_manifest` is the whole trust decision: a manifest is accepted when its signature
verifies with a trusted key, or when the task pins its sha256 and the pin matches; everything
else is a :class:`~peagent.errors.SignatureError` saying which case it was.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from peagent.errors import SignatureError, UsageError

PRIVATE_NAME = "peagent.key"
PUBLIC_NAME = "peagent.pub"
TRUSTED_DIR = Path("/etc/peagent/keys")


@dataclass(frozen=True)
class PublicKey:
    raw: bytes  # 32 bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()[:16]

    def to_text(self) -> str:
        return base64.b64encode(self.raw).decode()

    @classmethod
    def from_text(cls, text: str, where: str) -> PublicKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise UsageError(f"{where}: expected an ed25519 public key (32 bytes in base64), found {text[:60]!r}")
        return cls(raw)


def generate_keys(directory: Path) -> PublicKey:
    """Write a new key pair into ``directory`` (the private key readable by its owner only)."""
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    key_path = directory / PRIVATE_NAME
    if key_path.exists():
        raise UsageError(f"{key_path} exists: refusing to overwrite a private key")
    key_path.touch(mode=0o600)
    key_path.write_bytes(pem)
    public = PublicKey(private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    (directory / PUBLIC_NAME).write_text(public.to_text() + "\n")
    return public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an ed25519 private key")
    return key


def sign_manifest(manifest: bytes, key: Ed25519PrivateKey) -> str:
    public = PublicKey(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    return f"ed25519 {public.key_id} {base64.b64encode(key.sign(manifest)).decode()}\n"


def trusted_keys(directories: Iterable[Path] = (TRUSTED_DIR,), given: Iterable[str] = ()) -> list[PublicKey]:
    """The keys in ``*.pub`` files of the directories, and those given as text (peagent.key=)."""
    keys = []
    for directory in directories:
        for path in sorted(directory.glob("*.pub")) if directory.is_dir() else []:
            keys.append(PublicKey.from_text(path.read_text(), str(path)))
    keys += [PublicKey.from_text(text, "peagent.key") for text in given]
    return keys


def check_manifest(manifest: bytes, signature: str | None, trusted: Sequence[PublicKey],
                   pin: str | None = None) -> str:
    """Accept the manifest or raise SignatureError; returns how it was trusted."""
    digest = hashlib.sha256(manifest).hexdigest()
    if pin is not None:
        if digest != pin.lower():
            raise SignatureError(f"the manifest's sha256 is {digest}, but the task pins {pin.lower()}")
        return f"pinned sha256 {digest}"
    if signature is None:
        raise SignatureError("the manifest is not signed (no manifest.json.sig) and the task does not pin "
                             "its sha256: refusing an image nobody vouches for")
    parts = signature.split()
    if len(parts) != 3 or parts[0] != "ed25519":
        raise SignatureError(f"manifest.json.sig: expected 'ed25519 <key id> <signature>', found "
                             f"{signature.strip()[:60]!r}")
    key_id, sig_text = parts[1], parts[2]
    key = next((k for k in trusted if k.key_id == key_id), None)
    if key is None:
        known = ", ".join(k.key_id for k in trusted) or "none"
        raise SignatureError(f"the manifest is signed by key {key_id}, which this agent does not trust "
                             f"(trusted: {known})")
    try:
        Ed25519PublicKey.from_public_bytes(key.raw).verify(base64.b64decode(sig_text, validate=True), manifest)
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureError(f"the manifest's signature by key {key_id} is invalid: the manifest was "
                             "changed after it was signed, or the signature is damaged") from None
    return f"signed by key {key_id}"
