"""The dashboard in headless Chromium (Debian's), served by the real ``peagent serve`` fed realistic events.

:func:`fleet` makes the events a fleet of machines would send (schema 1, as peagent.status
emits them): every outcome a deployment can have, transfers with progress, retries, warnings and
failures with different codes. :func:`feed` puts them into the server's status store the way the
server itself does (machine seen, task handed out or held for approval, events ingested, stamped
with their own times); the live-update test goes through HTTP as a PE does (``GET /api/v1/task``,
``POST /api/v1/events`` with the deployment's token). What each test expects comes from the API
or from the events sent, never from the page. The fleet and the server come from
tests/support/fleet.py, which bench/dashboard_load.py uses too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from peagent.server.dashboard import HEADERS, asset
from peagent.server.store import RANKS as SOURCE_ORDER
from peagent.server.store import StatusStore
from tests.support.fleet import (
    ADMIN_TOKEN,
    CHROMIUM,
    Deployment,
    dashboard_server,
    feed,
    fleet,
    key_of,
)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "build" / "dashboard.png"
XSS_NAME = "<img src=x onerror=window.__xss=1>"
XSS_MESSAGE = "<b>bold</b><script>window.__xss=2</script>"

# ---------------------------------------------------------------- fixtures

def _xss(i: int, machine: dict[str, Any]) -> None:
    if i == 5:
        machine["hostname"] = XSS_NAME


@dataclass
class Site:
    url: str
    store: StatusStore
    deployments: list[Deployment] = field(default_factory=list)  # every one fed, in the order fed

    def feed(self, deployments: list[Deployment]) -> None:
        feed(self.store, deployments)
        self.deployments += sorted(deployments, key=lambda d: d.start)

    def api(self, path: str) -> Any:
        r = requests.get(f"{self.url}api/v1/{path}", timeout=10)
        r.raise_for_status()
        return r.json()

    def machines(self) -> dict[str, dict[str, Any]]:
        return {m["key"]: m for m in self.api("machines")["machines"]}

    def post_events(self, events: list[dict[str, Any]], token: str) -> None:
        """POST a deployment's events as its PE does; all must be accepted."""
        r = requests.post(f"{self.url}api/v1/events", json={"events": events}, timeout=10,
                          headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json() == {"accepted": len(events), "duplicates": 0}, r.text


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    deployments = fleet(40, special=_xss)
    for d in deployments:
        if d.machine["hostname"] == XSS_NAME:
            d.events[-1]["message"] = XSS_MESSAGE
    with dashboard_server(tmp_path_factory.mktemp("dashboard")) as server:
        site = Site(server.url, server.store)
        site.feed(deployments)
        yield site


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def problems() -> list[str]:
    """The page's console errors and uncaught exceptions (a test that provokes one clears it)."""
    return []


@pytest.fixture
def page(browser: Browser, problems: list[str]) -> Iterator[Page]:
    """A fresh page; the test fails on any console error or uncaught exception in it."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    yield page
    context.close()
    assert problems == []


def status_of(m: dict[str, Any]) -> str:
    """What the dashboard calls a machine's status: an administrator's hold first, then its deployment's."""
    if m["state"] in ("pending", "postponed"):
        return m["state"]
    if m["deployment"] is not None:
        return m["deployment"]["status"]
    return "cancelled" if m["state"] == "cancelled" else "idle"


def ids_shown(rows: Locator) -> list[str]:
    return rows.evaluate_all("rows => rows.map(r => r.dataset.id)")


# ---------------------------------------------------------------- tests

def test_table_shows_every_machine_with_phase_progress_and_counts(site: Site, page: Page) -> None:
    page.goto(site.url)
    machines = site.machines()
    expect(page.locator("#machines tbody tr")).to_have_count(len(machines))
    statuses: dict[str, int] = {}
    for key, m in machines.items():
        d = m["deployment"]
        row = page.locator(f'#machines tbody tr[data-key="{key}"]')
        status = status_of(m)
        statuses[status] = statuses.get(status, 0) + 1
        expect(row.locator("td.status .badge")).to_have_text(status)
        if d is None or status != d["status"]:
            continue
        expect(row.locator("td.phase > span")).to_have_text(d["phase"])
        if d["status"] == "running" and d["total"]:
            pct = 100 * d["done"] // d["total"]
            expect(row.locator(".pct")).to_have_text(f"{pct}%")
            expect(row.locator(".bar")).to_have_attribute("aria-valuenow", str(pct))
            expect(row.locator("td").nth(5)).to_have_text(f"{d['rate'] / (1 << 20):.1f} MiB/s")
        if d["error"]:
            expect(row.locator("td.status .sub")).to_have_text(d["error"]["code"])
    assert {"running", "done", "complete", "failed", "cancelled", "pending"} <= set(statuses)
    for status, count in statuses.items():
        expect(page.locator(f'#counts button[data-status="{status}"] .n')).to_have_text(str(count))
    expect(page.locator('#counts button[data-status="all"] .n')).to_have_text(str(len(machines)))

    page.fill("#filter", "fetch.failed")
    failing = [k for k, m in machines.items() if m["deployment"] and (m["deployment"]["error"] or {}).get("code") ==
               "fetch.failed" and status_of(m) == "failed"]
    expect(page.locator("#machines tbody tr:visible")).to_have_count(len(failing))
    page.fill("#filter", "")
    page.click('#counts button[data-status="failed"]')
    expect(page.locator("#machines tbody tr:visible")).to_have_count(statuses["failed"])

    page.click('#counts button[data-status="all"]')
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))


def test_sorting_by_a_column_and_back(site: Site, page: Page) -> None:
    page.goto(site.url)
    machines = site.machines()
    rows = page.locator("#machines tbody tr")
    expect(rows).to_have_count(len(machines))
    keys = rows.evaluate_all("rows => rows.map(r => r.dataset.key)")
    assert keys == list(machines)  # the DP's order: most recently seen first
    names = {k: (m["hostname"] or k).lower() for k, m in machines.items()}
    page.click("#machines th[data-sort=name]")
    expect(page.locator("#machines th[data-sort=name]")).to_have_attribute("aria-sort", "ascending")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.key)") == sorted(machines, key=lambda k: names[k])
    page.locator("#machines th[data-sort=progress]").press("Enter")
    page.locator("#machines th[data-sort=progress]").press("Enter")
    expect(page.locator("#machines th[data-sort=progress]")).to_have_attribute("aria-sort", "descending")
    shown = [int(t.rstrip("%") or -1) for t in rows.locator(".pct").all_text_contents()]
    assert shown == sorted(shown, reverse=True) and shown[0] == 100


def test_an_update_shows_without_reload(site: Site, page: Page) -> None:
    page.goto(site.url)
    expect(page.locator("#machines tbody tr")).to_have_count(len(site.machines()))
    page.evaluate("window.__same_page = true")
    running = next(d for d in site.deployments if d.outcome == "running" and d.events[-1]["phase"] == "write")
    key = key_of(running.machine)
    last = running.events[-1]
    moved = {**last, "id": f"{running.id}.pe.live1", "seq": last["seq"] + 1, "time": time.time(),
             "done": last["total"] * 97 // 100 + 12345, "rate": 123 * (1 << 20), "eta": 4.0}
    token = "token-of-the-running-pe-0123456789"
    site.store.add_token(running.id, token)  # as handing out its task did
    site.post_events([moved], token)
    # A machine never seen before asks for its task and reports, as a PE does.
    arrival = fleet(1, seed=99, prefix="n", special=lambda i, m: m.update(hostname="lab-new-arrival"))[-1]
    query = {"mac": arrival.machine["macs"], "uuid": arrival.machine["uuid"], "model": arrival.machine["model"]}
    task = requests.get(f"{site.url}api/v1/task", params=query, timeout=10).json()
    pe = [{**e, "deployment_id": task["id"], "id": f"{task['id']}.{e['seq']:05d}"} for e in arrival.events
          if e["source"] == "pe"]
    site.post_events(pe, task["status"]["token"])
    site.deployments.append(Deployment(task["id"], arrival.machine, arrival.outcome, "default", "tasks/default.json",
                                       time.time(), pe))
    row = page.locator(f'#machines tbody tr[data-key="{key}"]')
    expect(row.locator(".pct")).to_have_text(f"{100 * moved['done'] // moved['total']}%", timeout=5000)
    expect(row.locator("td").nth(5)).to_have_text("123.0 MiB/s")
    expect(page.locator("#machines tbody tr", has_text="lab-new-arrival")).to_have_count(1, timeout=5000)
    assert page.evaluate("window.__same_page") is True
    expect(page.locator("#live")).to_have_class("live live-ok")


def test_a_dp_out_of_reach_is_reported_and_the_table_kept(site: Site, page: Page, problems: list[str]) -> None:
    page.goto(site.url)
    rows = page.locator("#machines tbody tr")
    expect(rows).to_have_count(len(site.machines()))
    live = page.locator("#live")
    expect(live).to_have_class("live live-ok")
    page.route("**/api/v1/**", lambda route: route.abort("connectionrefused"))
    expect(live).to_have_class("live live-bad", timeout=5000)
    expect(live).to_contain_text("DP unreachable")
    expect(rows).to_have_count(len(site.machines()))
    page.unroute("**/api/v1/**")
    expect(live).to_have_class("live live-ok", timeout=5000)
    assert problems and all("ERR_CONNECTION_REFUSED" in p for p in problems), problems
    problems.clear()


def test_clicking_a_machine_opens_its_timeline_in_order(site: Site, page: Page) -> None:
    machines = site.machines()
    failed = next(d for d in site.deployments if d.outcome == "failed" and any(e["retries"] for e in d.events)
                  and (machines[key_of(d.machine)]["deployment"] or {}).get("id") == d.id)
    key = key_of(failed.machine)
    page.goto(site.url)
    page.locator(f'#machines tbody tr[data-key="{key}"] td.model').click()
    expect(page).to_have_url(f"{site.url}#/machine/{key}")
    items = page.locator("#timeline > li")
    expect(items).to_have_count(len(failed.events))
    ordered = sorted(failed.events, key=lambda e: (SOURCE_ORDER[e["source"]], e["seq"]))
    assert items.locator(".msg").all_text_contents() == [e["message"] for e in ordered]
    assert items.locator(".head .phase").all_text_contents() == [e["phase"] for e in ordered]
    assert [int(s) for s in items.evaluate_all("items => items.map(li => li.dataset.seq)")] == [e["seq"] for e in ordered]
    assert items.locator("time").all_text_contents() == [time.strftime("%H:%M:%S", time.localtime(e["time"]))
                                                        for e in ordered]
    error = ordered[-1]["error"]
    expect(items.last.locator(".err code")).to_have_text(error["code"])
    expect(items.last).to_have_class("ev level-error")
    expect(items.locator(".retries")).to_have_text(["retry 1"])
    expect(page.locator("#timeline-summary")).to_contain_text(error["code"])
    warned = [w for e in ordered for w in e["warnings"]]
    expect(items.locator(".warnings li")).to_have_text(warned)
    others = [d for d in site.deployments if key_of(d.machine) == key and d.id != failed.id and d.events]
    expect(page.locator("#machine-deployments tbody tr")).to_have_count(1 + len(others))
    for other in others:
        page.click(f"#machine-deployments a:text-is('{other.id}')")
        expect(page.locator("#timeline-id")).to_have_text(other.id)
        expect(items).to_have_count(len(other.events))


def test_errors_view_groups_by_code_model_and_dp(site: Site, page: Page) -> None:
    page.goto(site.url + "#/errors")
    grouped = site.api("errors")
    codes = page.locator("#errors-code tbody tr")
    expect(codes).to_have_count(len(grouped["by_code"]))
    assert len(grouped["by_code"]) >= 4
    for g in grouped["by_code"]:
        row = page.locator(f'#errors-code tbody tr[data-code="{g["code"]}"]')
        expect(row.locator("td.failures .n")).to_have_text(str(g["count"]))
        expect(row.locator("td.msg")).to_have_text(g["message"])
        expect(row.locator("td.ids a")).to_have_text(g["deployments"][:5])
    failed = [d for d in site.deployments if d.outcome == "failed"]
    counts = [int(n) for n in codes.locator("td.failures .n").all_text_contents()]
    assert counts == sorted(counts, reverse=True) and sum(counts) == len(failed)

    def table(selector: str) -> dict[tuple[str, str], int]:
        rows = page.locator(f"{selector} tbody tr")
        return {(r.locator("td").nth(0).inner_text(), r.locator("td").nth(1).inner_text()): int(r.locator(".n").inner_text())
                for r in rows.all()}

    by_model: dict[tuple[str, str], int] = {}
    by_dp: dict[tuple[str, str], int] = {}
    for d in failed:
        code = next(e["error"]["code"] for e in d.events if e["error"])
        by_model[d.machine["model"], code] = by_model.get((d.machine["model"], code), 0) + 1
        by_dp[d.events[-1]["dp"], code] = by_dp.get((d.events[-1]["dp"], code), 0) + 1
    expect(page.locator("#errors-model tbody tr")).to_have_count(len(by_model))
    assert table("#errors-model") == by_model
    assert table("#errors-dp") == by_dp
    first = grouped["by_code"][0]["deployments"][0]
    page.locator("#errors-code td.ids a", has_text=first).first.click()
    expect(page.locator("#timeline-id")).to_have_text(first)


def test_history_pages_newest_first(site: Site, page: Page) -> None:
    page.goto(site.url + "#/history")
    every = [d["id"] for d in site.api("deployments?limit=500")["deployments"]]
    assert every == [d.id for d in reversed(site.deployments) if d.outcome != "waiting"] and len(every) > 50
    rows = page.locator("#history tbody tr")
    expect(rows).to_have_count(50)
    assert ids_shown(rows) == every[:50]
    expect(page.locator("#history-newer")).to_be_disabled()
    page.click("#history-older")
    expect(rows).to_have_count(len(every) - 50)
    assert ids_shown(rows) == every[50:]
    expect(page.locator("#history-page")).to_have_text("page 2")
    expect(page.locator("#history-older")).to_be_disabled()
    page.click("#history-newer")
    expect(rows).to_have_count(50)
    page.select_option("#history-status", "failed")
    failed = [d["id"] for d in site.api("deployments?limit=500&status=failed")["deployments"]]
    assert len(failed) >= 5
    expect(rows).to_have_count(len(failed))
    assert ids_shown(rows) == failed


def test_markup_in_names_and_messages_is_shown_as_text(site: Site, page: Page) -> None:
    page.goto(site.url)
    named = next(d for d in site.deployments if d.machine["hostname"] == XSS_NAME)
    key = key_of(named.machine)
    cell = page.locator(f'#machines tbody tr[data-key="{key}"] td.name a')
    expect(cell).to_have_text(XSS_NAME)
    assert page.locator("#machines img, #machines script").count() == 0
    cell.click()
    expect(page.locator("#machine-title")).to_have_text(XSS_NAME)
    expect(page.locator("#timeline .msg", has_text="<script>")).to_have_text(XSS_MESSAGE)
    assert page.locator("main img, main b, main script").count() == 0
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None


def test_admin_actions_send_the_token_from_session_storage_only(site: Site, page: Page, problems: list[str]) -> None:
    waiting = next(d for d in site.deployments if d.outcome == "waiting")
    key = key_of(waiting.machine)
    page.goto(f"{site.url}#/machine/{key}")
    expect(page.locator("#machine-facts")).to_contain_text("pending")
    page.click("#admin summary")
    page.click('#admin button[data-action="approve"]')
    expect(page.locator("#admin-result")).to_have_text("Enter the DP's admin token first.")
    page.fill("#admin-token", "wrong-token-0123456789")
    page.click('#admin button[data-action="approve"]')
    expect(page.locator("#admin-result")).to_contain_text("refused the admin token (401)")
    problems.clear()  # Chromium logs the refused request itself
    page.fill("#admin-token", ADMIN_TOKEN)
    page.fill("#postpone-minutes", "30")
    page.click('#admin button[data-action="postpone"]')
    expect(page.locator("#admin-result")).to_have_text("postpone: done.")
    machine = site.api(f"machines/{key}")["machine"]
    assert machine["state"] == "postponed" and 1790 < machine["postponed_until"] - time.time() <= 1800
    expect(page.locator("#machine-facts")).to_contain_text("postponed")
    assert ADMIN_TOKEN not in page.url
    assert page.evaluate("sessionStorage.getItem('peagent.adminToken')") == ADMIN_TOKEN
    assert page.evaluate("localStorage.length") == 0
    page.click('#admin button[data-action="approve"]')
    expect(page.locator("#admin-result")).to_have_text("approve: done.")
    assert site.api(f"machines/{key}")["machine"]["state"] == "approved"


def test_the_dp_serves_the_dashboard_under_its_policy_and_nothing_else(site: Site) -> None:
    for path, name in (("", ""), ("ui/app.js", "app.js"), ("ui/style.css", "style.css")):
        r = requests.get(site.url + path, timeout=10)
        body, kind = asset(name)  # type: ignore[misc]
        assert (r.status_code, r.headers["Content-Type"], r.content) == (200, kind, body)
        assert r.headers["Content-Security-Policy"] == HEADERS["Content-Security-Policy"]
    for path in ("ui/nope.js", "ui/dashboard.py", "ui/..%2fdp.py", "ui/%2e%2e", "ui/", "ui/app.js/x"):
        r = requests.get(site.url + path, timeout=10)
        assert r.status_code in (400, 404), path
        assert r.headers["Content-Type"] == "application/json" and "error" in r.json(), path
