"""Hooks of the netboot tests: failure reports that carry the servers' logs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test using this fixture failed (for teardown code that shows logs)."""
    report = getattr(request.node, "report_call", None)
    return report is None or report.failed
