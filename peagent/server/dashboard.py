"""The dashboard of ``peagent serve``: one static page that reads the DP's JSON API and shows it live.

The page is plain HTML, CSS and JavaScript shipped inside the package (``peagent/server/ui``, package
data), with no build step and no external URL: a DP on an isolated deployment network has nothing
else to load from. Everything it shows comes from the read-only ``/api/v1`` endpoints, polled every
two seconds, so the server keeps no per-viewer state and the page is just another API client.

The server routes ``GET /`` to ``asset("")`` and ``GET /ui/<name>`` to ``asset(name)``. Names are
looked up in a fixed table, never joined to a path, so ``../`` or an encoded slash cannot reach any
other file: an unknown name is simply ``None`` (a 404).
"""

from __future__ import annotations

import functools
from importlib import resources

# name in the URL -> (file under ui/, content type); the index is also reachable by its own name.
_FILES: dict[str, tuple[str, str]] = {
    "": ("index.html", "text/html; charset=utf-8"),
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}

# Headers worth sending with every asset: the page's own CSP (also in index.html) forbids inline
# script and any origin but the DP, so a string the escaping missed still could not run.
HEADERS: dict[str, str] = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


def names() -> list[str]:
    """Every name :func:`asset` serves ("" is the index page)."""
    return list(_FILES)


def asset(name: str) -> tuple[bytes, str] | None:
    """The body and content type of the dashboard file ``name``, or None when there is no such file."""
    known = _FILES.get(name)
    if known is None:
        return None
    file, content_type = known
    return _read(file), content_type


@functools.cache
def _read(file: str) -> bytes:
    # Read once: package data does not change under a running server, and the page is fetched often.
    return resources.files(__package__).joinpath("ui", file).read_bytes()
