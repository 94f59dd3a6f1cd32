"""The PE build: public keys given at build time end up trusted in the PE (/etc/peagent/keys)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.root
def test_trusted_keys_are_built_into_the_pe(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the PE build needs root")
    # A committed key, so that the build's cache key (which covers the keys) is the same every run.
    keys = Path(__file__).parent / "fixtures" / "keys"
    out = tmp_path / "pe"
    subprocess.run([str(ROOT / "buildroot/build-pe.sh"), str(out)], check=True, capture_output=True,
                   env={**os.environ, "PEAGENT_TRUSTED_KEYS": str(keys)})
    listing = subprocess.run(f"zstd -dc {out / 'initrd.zst'} | cpio -t --quiet", shell=True, check=True,
                             capture_output=True, text=True).stdout.split()
    assert "etc/peagent/keys/test.pub" in listing
