"""A finished full capture's details on the Captures page in headless Chromium, against a real
appliance and bucket: its files table and its first packets (read from the bucket, merged).
Usage: full_details.py BASE_URL TOKEN CAPTURE_ID ARTIFACTS_DIR. Prints a JSON summary last."""
import json
import os
import sys

from playwright.sync_api import expect

from signed_in import signed_in

base, token, capture_id, out = sys.argv[1:5]
os.makedirs(out, exist_ok=True)
with signed_in(base, token) as (page, errors):
    page.locator(f'tr[data-id="{capture_id}"]').get_by_role("button", name="Details").click()
    files = page.get_by_role("table", name="Files").locator("tbody tr")
    expect(files.first).to_be_visible(timeout=20000)
    packets = page.locator("#packets tbody tr")
    # The summary, or an error saying why not.
    page.wait_for_function("() => !document.querySelector('#summary').hidden || !document.querySelector('#details-error').hidden",
                           timeout=30000)
    page.screenshot(path=f"{out}/details-full-1440.png", full_page=True)
    print(json.dumps({
        "files": [[c.inner_text() for c in r.locator("td").all()] for r in files.all()],
        "packets": packets.count(),
        "totals": page.locator("#summary-totals").inner_text(),
        "error": page.locator("#details-error").inner_text() if page.locator("#details-error").is_visible() else "",
        "status": page.locator("#details-status").inner_text(),
        "page_errors": errors,
    }))
