from __future__ import annotations

import pytest

from peagent.cmdline import BootParams, parse_cmdline
from peagent.errors import TaskError, UsageError


def test_parameters_are_read_and_others_ignored() -> None:
    params = parse_cmdline(
        'BOOT_IMAGE=/vmlinuz console=ttyS0 quiet peagent.task=http://dp/t.json '
        'peagent.dp=http://dp1/,https://dp2:8443/ peagent.status="http://dp/status" peagent.shell\n')
    assert params == BootParams(task="http://dp/t.json", dps=("http://dp1/", "https://dp2:8443/"),
                                status="http://dp/status", shell=True)


def test_empty_command_line() -> None:
    assert parse_cmdline("console=ttyS0") == BootParams()


@pytest.mark.parametrize(("text", "field", "found"), [
    ("peagent.dp=dp1", "peagent.dp", '"dp1"'),
    ("peagent.task=", "peagent.task", '""'),
    ("peagent.status=ftp://x", "peagent.status", '"ftp://x"'),
    ("peagent.dps=http://x", "peagent.dps", "an unknown one (did you mean peagent.dp?)"),
    ('peagent.task="http://x', "kernel command line", "No closing quotation"),
])
def test_bad_parameters_name_themselves(text: str, field: str, found: str) -> None:
    with pytest.raises(TaskError) as info:
        parse_cmdline(text)
    assert info.value.field == field
    assert info.value.found == found


def test_trusted_keys_may_be_given_several_times() -> None:
    key = "A" * 43 + "="
    assert parse_cmdline(f"peagent.key={key} peagent.key={key}").keys == (key, key)
    with pytest.raises(UsageError, match=r"peagent.key: expected an ed25519 public key"):
        parse_cmdline("peagent.key=short")
