"""Save a screenshot of a page as headless chromium (Debian's, driven by Playwright) renders it.

``python tests/support/screenshot.py URL PNG``: run as a script so that it can be started inside a
network namespace, where the DP under test listens. It waits for the page's network to go quiet,
then a moment for the dashboard's first poll to paint.
"""

from __future__ import annotations

import sys

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def screenshot(url: str, path: str, width: int = 1400, height: int = 900) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url, wait_until="networkidle")
            page.wait_for_timeout(1500)
            page.screenshot(path=path, full_page=True)
        finally:
            browser.close()


if __name__ == "__main__":
    screenshot(sys.argv[1], sys.argv[2])
