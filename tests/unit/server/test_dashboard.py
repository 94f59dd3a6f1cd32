from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peagent.server.dashboard import HEADERS, asset, names

ROOT = Path(__file__).resolve().parents[3]
UI = ROOT / "peagent" / "server" / "ui"


class _Refs(HTMLParser):
    """The URLs index.html loads (src, href) and its CSP meta tag."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.csp: str | None = None
        self.inline_handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        self.inline_handlers += [k for k, _ in attrs if k.startswith("on")]
        if tag == "meta" and values.get("http-equiv") == "Content-Security-Policy":
            self.csp = values.get("content")


def refs() -> _Refs:
    parser = _Refs()
    parser.feed(asset("")[0].decode())  # type: ignore[index]
    return parser


def test_index_and_files_with_their_types() -> None:
    body, kind = asset("")  # type: ignore[misc]
    assert kind == "text/html; charset=utf-8"
    assert body == (UI / "index.html").read_bytes()
    assert asset("index.html") == (body, kind)
    assert asset("app.js") == ((UI / "app.js").read_bytes(), "text/javascript; charset=utf-8")
    assert asset("style.css") == ((UI / "style.css").read_bytes(), "text/css; charset=utf-8")


def test_every_file_the_page_loads_is_served_from_ui() -> None:
    loaded = [u for u in refs().urls if not u.startswith(("#", "data:"))]
    assert sorted(loaded) == ["ui/app.js", "ui/style.css"]
    for url in loaded:
        assert asset(url.removeprefix("ui/")) is not None, url


def test_every_ui_file_is_served_and_shipped_as_package_data() -> None:
    on_disk = sorted(p.name for p in UI.iterdir())
    assert sorted(n for n in names() if n) == on_disk
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = package_data["peagent.server"]
    for name in on_disk:
        assert any(fnmatch.fnmatch(f"ui/{name}", g) for g in globs), f"ui/{name} is not package data"


@pytest.mark.parametrize("name", [
    "..", ".", "/", "../dp.py", "../dashboard.py", "dashboard.py", "__init__.py", "ui/app.js", "/app.js",
    "app.js/", "./app.js", "app.js/../style.css", "%2e%2e/dp.py", "..%2fdp.py", "APP.JS", "app.js\0",
    "app.js ", "app", "index", "ui", "ui/", "../../../../etc/passwd", "\\..\\dp.py",
])
def test_unknown_names_and_traversal_are_refused(name: str) -> None:
    assert asset(name) is None


@given(st.text(max_size=40))
def test_any_other_name_is_refused(name: str) -> None:
    if name in names():
        assert asset(name) is not None
    else:
        assert asset(name) is None


def test_no_external_urls() -> None:
    # Served on an isolated deployment network: a CDN link would be a page that never finishes loading.
    for name in names():
        text = asset(name)[0].decode()  # type: ignore[index]
        assert not re.search(r"(?i)\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), name
        assert "@import" not in text and "url(" not in text, name


def test_script_never_parses_markup_from_strings() -> None:
    # All API text reaches the page through textContent and attributes; these sinks would parse it as HTML.
    script = asset("app.js")[0].decode()  # type: ignore[index]
    code = re.sub(r"//[^\n]*", "", script)  # comments may name them
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setAttribute(\"style\"", "createContextualFragment", "srcdoc"):
        assert sink not in code, sink


def test_content_security_policy_forbids_inline_script() -> None:
    page = refs()
    assert page.inline_handlers == []
    for policy in (page.csp, HEADERS["Content-Security-Policy"]):
        assert policy is not None
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"
        assert directives["connect-src"] == "'self'"

