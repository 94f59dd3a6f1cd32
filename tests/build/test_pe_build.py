"""The PE build: public keys given at build time end up trusted in the PE (/etc/peagent/keys)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from peagent.image.sign import generate_keys

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.root
def test_trusted_keys_are_built_into_the_pe(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the PE build needs root")
    keys = tmp_path / "keys"
    generate_keys(keys)
    (keys / "peagent.key").unlink()  # only public keys go in
    out = tmp_path / "pe"
    subprocess.run([str(ROOT / "buildroot/build-pe.sh"), str(out)], check=True, capture_output=True,
                   env={**os.environ, "PEAGENT_TRUSTED_KEYS": str(keys)})
    listing = subprocess.run(f"zstd -dc {out / 'initrd.zst'} | cpio -t --quiet", shell=True, check=True,
                             capture_output=True, text=True).stdout.split()
    assert "etc/peagent/keys/peagent.pub" in listing
    assert not any(name.endswith(".key") for name in listing if "/peagent/" in name)
