"""The Captures page of one fleet node in headless Chromium: a full capture that ran on other
nodes lists them. Usage: fleet_page.py BASE_URL TOKEN CAPTURE_ID ARTIFACTS_DIR. Prints a JSON
summary last: the nodes listed in the capture's row and its note."""
import json
import os
import sys

from playwright.sync_api import expect, sync_playwright

base, token, capture_id, out = sys.argv[1:5]
os.makedirs(out, exist_ok=True)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
    page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    page.get_by_label("API token", exact=True).fill(token)
    page.get_by_role("button", name="Sign in").click()
    row = page.locator(f'tr[data-id="{capture_id}"]')
    expect(row).to_be_visible()
    nodes = row.get_by_role("list", name="Nodes").get_by_role("listitem")
    page.screenshot(path=f"{out}/fleet-list-1440.png", full_page=True)
    print(json.dumps({"nodes": nodes.all_inner_texts(), "page_errors": errors}))
    browser.close()
