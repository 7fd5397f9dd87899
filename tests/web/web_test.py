"""The Packet captures page in real headless Chromium (Debian's, driven by Playwright).
Usage: web_test.py BASE_URL TOKEN ARTIFACTS_DIR. Prints a JSON summary last."""
import datetime
import json
import os
import re
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

    # Addresses are checked in the browser (IPv4 and IPv6), before anything is sent.
    page.get_by_label("Time limit").fill("120")
    page.get_by_label("Packet limit").fill("50")
    page.get_by_label("Source address").fill("1.2.3")
    page.get_by_label("Destination address").fill("2001:db8:::1")
    page.get_by_role("button", name="Start", exact=True).click()
    sa_error = page.locator("#f-source_address + .field-error")
    expect(sa_error).to_contain_text("not an IPv4 or IPv6 address")
    expect(page.locator("#f-destination_address + .field-error")).to_contain_text("not an IPv4 or IPv6 address")
    summary["server_error"] = sa_error.inner_text()
    page.get_by_label("Source address").fill("")
    page.get_by_label("Destination address").fill("")
    # Protocol by name ("Other" takes a number).
    page.get_by_label("Protocol", exact=True).select_option(label="Other: a number")
    page.get_by_label("Protocol number").fill("300")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#f-protocol_number + .field-error")).to_contain_text("from 0 to 255")
    page.get_by_label("Protocol", exact=True).select_option(label="UDP (17)")
    expect(page.get_by_label("Protocol number")).to_be_hidden()
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
    expect(row).to_contain_text("proto UDP (17) and \u201cudp\u201d")

    # Download it.
    with page.expect_download() as dl:
        row.get_by_role("button", name="Download").click()
    path = f"{out}/download.pcap"
    dl.value.save_as(path)
    summary["download"] = path
    page.screenshot(path=f"{out}/list-1440.png", full_page=True)

    # The appliance at a glance: RX rate, drops, disk headroom, and a sparkline after two samples.
    appliance = page.get_by_role("group", name="Appliance status")
    expect(appliance).to_contain_text("pkt/s")
    expect(appliance).to_contain_text("disk headroom")
    expect(page.locator("#appliance-chart polyline")).to_have_count(1, timeout=15000)
    summary["appliance"] = appliance.inner_text()

    # Details of the capture: its packets decoded, a chart, protocols and talkers.
    row.get_by_role("button", name="Details").click()
    expect(page.get_by_role("heading", name="Simple capture")).to_be_visible()
    packets = page.locator("#packets")
    expect(packets.locator("tbody tr").first).to_be_visible()
    summary["packet_rows"] = [[c.inner_text() for c in r.locator("td").all()] for r in packets.locator("tbody tr").all()]
    summary["chart_bars"] = page.locator("#chart rect").count()
    summary["protocol_rows"] = [[c.inner_text() for c in r.locator("td").all()] for r in page.get_by_role("table", name="Protocols").locator("tbody tr").all()]
    summary["talkers_rows"] = [[c.inner_text() for c in r.locator("td").all()] for r in page.get_by_role("table", name="Top talkers by packets").locator("tbody tr").all()]
    expect(page.locator("#files-section")).to_be_hidden()
    page.screenshot(path=f"{out}/details-1440.png", full_page=True)
    page.set_viewport_size({"width": 375, "height": 812})
    page.screenshot(path=f"{out}/details-375.png", full_page=True)
    summary["overflow_375_details"] = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    page.set_viewport_size({"width": 1440, "height": 900})
    page.get_by_role("button", name="Back to captures").click()
    expect(page.get_by_role("heading", name="Packet captures")).to_be_visible()

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
    # An error of a simple capture's form goes when the type changes.
    page.get_by_label("Simple").check()
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Time limit").fill("999")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(tl_error).to_be_visible()
    page.get_by_role("button", name="Back").click()
    page.get_by_label("Full").check()
    page.get_by_role("button", name="Next").click()
    expect(tl_error).to_be_hidden()
    expect(page.get_by_label("Time limit")).not_to_have_attribute("aria-invalid", "true")
    page.get_by_label("Time limit").fill("60")
    # Colos: a choice of those served here.
    colo = page.get_by_label("Colo (data center)")
    expect(colo).to_be_visible()
    expect(colo.locator("option")).not_to_have_count(0)
    summary["colos"] = colo.locator("option").all_inner_texts()
    # Byte limits with units.
    page.get_by_label("Byte limit").fill("10 MB")
    expect(page.locator("#byte-limit-hint")).to_contain_text("= 10,000,000 bytes")
    page.get_by_label("Byte limit").fill("2 GB")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#f-byte_limit ~ .field-error")).to_contain_text("1 GB")
    page.get_by_label("Byte limit").fill("512 KiB")
    expect(page.locator("#byte-limit-hint")).to_contain_text("= 524,288 bytes")
    page.screenshot(path=f"{out}/form-375.png", full_page=True)
    summary["overflow_375_form"] = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    page.get_by_role("button", name="Cancel").last.click()

    # Sign out forgets the credential.
    page.set_viewport_size({"width": 1440, "height": 900})
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    summary["session_after_sign_out"] = page.evaluate("sessionStorage.getItem('pcapd.session')")
    # The sign-in radio buttons sit beside their labels, on one line each.
    summary["radios"] = page.evaluate("""[...document.querySelectorAll('.modes label')].map((l) => {
        const r = l.querySelector('input').getBoundingClientRect(), b = l.getBoundingClientRect();
        return {radio_width: r.width, label_height: b.height, radio_left_of_text: r.right < b.right - 40}; })""")

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

    # Full captures need a bucket and live traffic (tests/buckets.rs); here their rendering is
    # checked with the list and the files answered by Playwright (mocked), the rest real:
    # a running capture's progress, and the files list of a finished one (its summary: the
    # bucket unreachable, 503).
    mock = ctx.new_page()
    mock.on("pageerror", lambda e: errors.append(str(e)))
    now = datetime.datetime.now(datetime.timezone.utc)
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    run_id, done_id = "ab" * 16, "cd" * 16
    full = {"type": "full", "system": "magic-transit", "time_limit": 300, "filter_v1": {}, "colo_name": "lab02",
            "destination_conf": "s3://bucket/pcaps?region=us-east-1", "byte_limit": 10000000}
    listed = [dict(full, id=run_id, status="running", submitted=iso(now - datetime.timedelta(seconds=10)),
                   packets_captured=1234, stop_requested=iso(now)),
              dict(full, id=done_id, status="success", submitted=iso(now - datetime.timedelta(hours=1)), packets_captured=99)]
    env = lambda r: {"success": True, "errors": [], "messages": [], "result": r}
    mock.route(re.compile(r".*/pcaps$"), lambda route: route.fulfill(json=env(listed)) if route.request.method == "GET" else route.continue_())
    mock.route(re.compile(r".*/pcaps/" + done_id + "/files$"), lambda route: route.fulfill(json=env([
        {"node": "n1", "key": f"pcaps/{done_id}/n1-0/pcap_{done_id}.pcap", "bytes": 12345678, "packets": 60, "state": "uploaded"},
        {"node": "n2", "key": f"pcaps/{done_id}/n2-0/pcap_{done_id}.pcap", "bytes": 2048, "packets": 39, "state": "uploaded"}])))
    mock.route(re.compile(r".*/pcaps/" + done_id + "/summary$"), lambda route: route.fulfill(status=503, json={
        "success": False, "result": None, "messages": [], "errors": [{"code": 1003, "message": "reading the capture's objects from its bucket failed: connection refused"}]}))
    mock.goto(base + "/")
    mock.get_by_label("API token", exact=True).fill(token)
    mock.get_by_role("button", name="Sign in").click()
    run_row = mock.locator(f'tr[data-id="{run_id}"]')
    expect(run_row).to_contain_text("stop requested")
    expect(run_row).to_contain_text("1,234")
    expect(run_row.locator(".time-left")).to_contain_text("left")
    expect(run_row).to_contain_text("10.0 MB")
    summary["running_row"] = run_row.inner_text()
    mock.screenshot(path=f"{out}/list-running-mocked-1440.png", full_page=True)
    # The running capture's files: the real appliance has no files route (404): no table, no error.
    run_row.get_by_role("button", name="Details").click()
    expect(mock.locator("#details-status")).to_contain_text("in progress")
    mock.wait_for_timeout(500)
    summary["files_on_404"] = mock.locator("#files-section").is_visible()
    summary["error_on_404"] = mock.locator("#details-error").is_visible()
    mock.get_by_role("button", name="Back to captures").click()
    mock.locator(f'tr[data-id="{done_id}"]').get_by_role("button", name="Details").click()
    files = mock.get_by_role("table", name="Files")
    expect(files.locator("tbody tr")).to_have_count(2)
    summary["files_rows"] = [[c.inner_text() for c in r.locator("td").all()] for r in files.locator("tbody tr").all()]
    expect(mock.locator("#details-error")).to_contain_text("Could not read the capture: reading the capture's objects from its bucket failed")
    mock.screenshot(path=f"{out}/details-full-mocked-1440.png", full_page=True)
    summary["page_errors"] = errors
    browser.close()

print(json.dumps(summary))
