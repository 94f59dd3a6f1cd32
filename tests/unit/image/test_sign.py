from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from peagent.errors import SignatureError, UsageError
from peagent.image.sign import (
    PublicKey,
    check_manifest,
    generate_keys,
    load_private_key,
    sign_manifest,
    trusted_keys,
)

MANIFEST = b'{"format": "peagent-image"}\n'


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, PublicKey]:
    return tmp_path / "peagent.key", generate_keys(tmp_path)


def test_a_signed_manifest_is_trusted_by_its_key_only(keys, tmp_path: Path) -> None:
    private, public = keys
    signature = sign_manifest(MANIFEST, load_private_key(private))
    assert signature.startswith(f"ed25519 {public.key_id} ")
    assert check_manifest(MANIFEST, signature, [public]) == f"signed by key {public.key_id}"
    other = generate_keys(tmp_path / "other")
    with pytest.raises(SignatureError, match=f"signed by key {public.key_id}, which this agent does not trust "
                                             rf"\(trusted: {other.key_id}\)"):
        check_manifest(MANIFEST, signature, [other])
    with pytest.raises(SignatureError, match="invalid: the manifest was changed after it was signed"):
        check_manifest(MANIFEST + b" ", signature, [public])


def test_pins_and_unsigned_manifests(keys) -> None:
    digest = hashlib.sha256(MANIFEST).hexdigest()
    assert check_manifest(MANIFEST, None, [], pin=digest.upper()) == f"pinned sha256 {digest}"
    with pytest.raises(SignatureError, match=f"the manifest's sha256 is {digest}, but the task pins 0000"):
        check_manifest(MANIFEST, None, [], pin="0" * 64)
    with pytest.raises(SignatureError, match=r"not signed .* and the task does not pin its sha256"):
        check_manifest(MANIFEST, None, [keys[1]])
    with pytest.raises(SignatureError, match="expected 'ed25519 <key id> <signature>'"):
        check_manifest(MANIFEST, "rsa x y", [keys[1]])


def test_trusted_keys_from_files_and_text(keys, tmp_path: Path) -> None:
    _, public = keys
    found = trusted_keys([tmp_path, tmp_path / "missing"], [public.to_text()])
    assert found == [public, public]
    with pytest.raises(UsageError, match=r"peagent.key: expected an ed25519 public key \(32 bytes in base64\)"):
        trusted_keys([], ["bm9wZQ=="])


def test_the_private_key_is_private_and_never_overwritten(keys, tmp_path: Path) -> None:
    private, _ = keys
    assert private.stat().st_mode & 0o077 == 0
    with pytest.raises(UsageError, match="exists: refusing to overwrite a private key"):
        generate_keys(tmp_path)
