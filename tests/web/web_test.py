"""The Packet captures page in real headless Chromium (Debian's, driven by Playwright).
Usage: web_test.py BASE_URL TOKEN ARTIFACTS_DIR. Prints a JSON summary last."""
import json
import os
import sys

from playwright.sync_api import expect, sync_playwright

base, token, both_token, out = sys.argv[1:5]
os.makedirs(out, exist_ok=True)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
summary = {}

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")

    # A wrong token gets a clear sign-in error.
    page.get_by_label("API token", exact=True).fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text("Sign-in failed")
    summary["wrong_token"] = page.locator("#signin-error").inner_text()

    # Sign in; a fresh appliance has no captures.
    page.get_by_label("API token", exact=True).fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Packet captures")).to_be_visible()
    expect(page.locator("#captures-empty")).to_contain_text("No captures yet")

    # Keyboard: the start button opens the form, Enter moves on.
    page.locator("#start-capture").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_text("Step 1 of 2")).to_be_visible()
    page.get_by_label("Simple").check()
    page.get_by_role("button", name="Next").click()

    # An out-of-range time limit: an inline error next to the field, nothing sent.
    page.get_by_label("Time limit").fill("999")
    page.get_by_role("button", name="Start", exact=True).click()
    tl_error = page.locator("#f-time_limit + .field-error")
    expect(tl_error).to_contain_text("from 1 to 300")
    expect(page.get_by_label("Time limit")).to_have_attribute("aria-invalid", "true")
    summary["inline_error"] = tl_error.inner_text()

    # A server-side error is shown next to the field it names.
    page.get_by_label("Time limit").fill("120")
    page.get_by_label("Packet limit").fill("50")
    page.get_by_label("Source address").fill("1.2.3")
    page.get_by_role("button", name="Start", exact=True).click()
    sa_error = page.locator("#f-source_address + .field-error")
    expect(sa_error).to_contain_text("not an IPv4 or IPv6 address")
    summary["server_error"] = sa_error.inner_text()
    page.get_by_label("Source address").fill("")
    page.get_by_label("Protocol").fill("17")
    # A tcpdump expression libpcap cannot parse: its message beside the field.
    page.get_by_label("tcpdump expression").fill("udp and")
    page.get_by_role("button", name="Start", exact=True).click()
    fe_error = page.locator("#f-filter_expression + .field-error")
    expect(fe_error).to_contain_text("syntax error")
    summary["expression_error"] = fe_error.inner_text()
    page.get_by_label("tcpdump expression").fill("udp")
    page.screenshot(path=f"{out}/form-1440.png", full_page=True)
    page.get_by_role("button", name="Start", exact=True).click()

    # Back on the list: the capture reaches Complete, with the exact status on hover.
    row = page.locator("#captures tbody tr").first
    expect(row).to_be_visible()
    badge = row.locator(".badge")
    expect(badge).to_have_text("Complete", timeout=30000)
    expect(badge).to_have_attribute("title", "API status: success")
    summary["row"] = row.inner_text()
    expect(row).to_contain_text("proto 17 and \u201cudp\u201d")

    # Download it.
    with page.expect_download() as dl:
        row.get_by_role("button", name="Download").click()
    path = f"{out}/download.pcap"
    dl.value.save_as(path)
    summary["download"] = path
    page.screenshot(path=f"{out}/list-1440.png", full_page=True)

    # Buckets tab: empty state, and a bad destination is explained.
    page.get_by_role("tab", name="Buckets").click()
    expect(page.locator("#buckets-empty")).to_be_visible()
    page.get_by_label("Bucket destination").fill("ftp://nope")
    page.get_by_role("button", name="Register bucket").click()
    expect(page.locator("#bucket-dest-error")).to_contain_text("is not s3://")
    page.get_by_role("tab", name="Captures").click()

    # 375 px wide: still readable (no horizontal scroll), list and form.
    page.set_viewport_size({"width": 375, "height": 812})
    page.screenshot(path=f"{out}/list-375.png", full_page=True)
    summary["overflow_375"] = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    page.locator("#start-capture").click()
    page.get_by_label("Full").check()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_label("Colo (data center)")).to_be_visible()
    page.screenshot(path=f"{out}/form-375.png", full_page=True)
    summary["overflow_375_form"] = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    page.get_by_role("button", name="Cancel").last.click()

    # Sign out forgets the credential.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    summary["session_after_sign_out"] = page.evaluate("sessionStorage.getItem('pcapd.session')")

    # A credential of two accounts gets an account picker; switching shows the other's captures.
    page.set_viewport_size({"width": 1440, "height": 900})
    page.get_by_label("API token", exact=True).fill(both_token)
    page.get_by_role("button", name="Sign in").click()
    picker = page.get_by_label("Account")
    expect(picker).to_be_visible()
    summary["accounts"] = picker.locator("option").all_inner_texts()
    expect(page.locator("#captures tbody tr").first).to_be_visible()
    picker.select_option(index=1)
    expect(page.locator("#captures-empty")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    summary["page_errors"] = errors
    browser.close()

print(json.dumps(summary))
