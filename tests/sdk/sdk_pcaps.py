"""Drives pcapd's PCAPs API with Cloudflare's official Python SDK (strict response validation,
no retries): create / get / list / download of a simple capture, and the SDK's view of errors.
Usage: sdk_pcaps.py BASE_URL ACCOUNT TOKEN EMAIL KEY OUT_DIR. Prints a JSON summary last."""
import json
import sys
import time

import cloudflare

base, account, token, email, key, out_dir = sys.argv[1:7]
cf = cloudflare.Cloudflare(api_token=token, base_url=base, max_retries=0, _strict_response_validation=True)

created = cf.magic_transit.pcaps.create(
    account_id=account, system="magic-transit", type="simple", time_limit=300, packet_limit=1000,
    filter_v1={"protocol": 17},
)
assert created.id and len(created.id) == 32, created
assert created.status == "pending", created.status
assert created.filter_v1.protocol == 17, created.filter_v1
assert created.type == "simple" and created.system == "magic-transit"

deadline = time.time() + 30
while True:
    got = cf.magic_transit.pcaps.get(created.id, account_id=account)
    if got.status in ("success", "failed"):
        break
    assert time.time() < deadline, got.status
    time.sleep(0.1)
assert got.status == "success", got
assert got.submitted.endswith("Z")

listed = list(cf.magic_transit.pcaps.list(account_id=account))
assert listed and listed[0].id == created.id, [p.id for p in listed]

data = cf.magic_transit.pcaps.download.get(created.id, account_id=account).read()
assert data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"), data[:4]
path = f"{out_dir}/sdk-{created.id}.pcap"
with open(path, "wb") as f:
    f.write(data)

errors = {}
try:
    cf.magic_transit.pcaps.create(account_id=account, system="magic-transit", type="simple", time_limit=301, packet_limit=10)
except cloudflare.BadRequestError as e:
    errors["bad_request"] = [e.status_code, str(e)]
started = time.time()
try:
    cf.magic_transit.pcaps.create(account_id=account, system="magic-transit", type="simple", time_limit=10, packet_limit=10)
except cloudflare.RateLimitError as e:
    errors["rate_limited"] = [e.status_code, e.response.headers.get("x-should-retry"), round(time.time() - started, 2)]
try:
    cloudflare.Cloudflare(api_token="wrong", base_url=base, max_retries=0).magic_transit.pcaps.list(account_id=account).result
except cloudflare.PermissionDeniedError as e:
    errors["permission_denied"] = e.status_code
try:
    cf.magic_transit.pcaps.get("0" * 32, account_id=account)
except cloudflare.NotFoundError as e:
    errors["not_found"] = e.status_code

by_key = cloudflare.Cloudflare(api_email=email, api_key=key, base_url=base, max_retries=0, _strict_response_validation=True)
same = by_key.magic_transit.pcaps.get(created.id, account_id=account)
assert same.id == created.id

print(json.dumps({"id": created.id, "path": path, "listed": len(listed), "errors": errors}))
