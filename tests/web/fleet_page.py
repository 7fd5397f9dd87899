"""The Captures page of one fleet node in headless Chromium: a full capture that ran on other
nodes lists them. Usage: fleet_page.py BASE_URL TOKEN CAPTURE_ID ARTIFACTS_DIR. Prints a JSON
summary last: the nodes listed in the capture's row and its note."""
import json
import os
import sys

from playwright.sync_api import expect

from signed_in import signed_in

base, token, capture_id, out = sys.argv[1:5]
os.makedirs(out, exist_ok=True)
with signed_in(base, token) as (page, errors):
    row = page.locator(f'tr[data-id="{capture_id}"]')
    expect(row).to_be_visible()
    nodes = row.get_by_role("list", name="Nodes").get_by_role("listitem")
    page.screenshot(path=f"{out}/fleet-list-1440.png", full_page=True)
    print(json.dumps({"nodes": nodes.all_inner_texts(), "page_errors": errors}))
