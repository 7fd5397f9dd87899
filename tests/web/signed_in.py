"""Headless Chromium (Debian's, through Playwright) signed in to the Captures page: shared by the
page scripts that tests run against one appliance."""
import contextlib

from playwright.sync_api import sync_playwright

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def signed_in(base, token):
    """Yields (page, errors): the page signed in with `token`, and the page errors seen."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/")
        page.get_by_label("API token", exact=True).fill(token)
        page.get_by_role("button", name="Sign in").click()
        try:
            yield page, errors
        finally:
            browser.close()
