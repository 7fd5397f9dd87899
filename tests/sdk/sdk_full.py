"""Cloudflare's Python SDK driving bucket ownership and a full capture against pcapd:
ownership create / get / validate / delete, full create, a 409 for a second one (not retried),
and stop. Usage: sdk_full.py BASE_URL ACCOUNT TOKEN S3_ENDPOINT ACCESS SECRET BUCKET."""
import json
import sys
import time

import boto3
import cloudflare

base, account, token, endpoint, access, secret, bucket = sys.argv[1:8]
cf = cloudflare.Cloudflare(api_token=token, base_url=base, max_retries=0, _strict_response_validation=True)
dest = f"s3://{bucket}/sdk?region=us-east-1"

o = cf.magic_transit.pcaps.ownership.create(account_id=account, destination_conf=dest)
assert o.status == "pending" and o.validated == "" and o.filename.startswith("ownership-challenge-"), o
listed = cf.magic_transit.pcaps.ownership.get(account_id=account)
assert [x.id for x in listed] == [o.id], listed
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access, aws_secret_access_key=secret)
challenge = s3.get_object(Bucket=bucket, Key=f"sdk/{o.filename}")["Body"].read().decode()
v = cf.magic_transit.pcaps.ownership.validate(account_id=account, destination_conf=dest, ownership_challenge=challenge)
assert v.status == "success" and v.validated, v

p = cf.magic_transit.pcaps.create(account_id=account, system="magic-transit", type="full", time_limit=300,
                                  colo_name="sfo", destination_conf=dest, filter_v1={"protocol": 6})
assert p.status == "running", p
conflict = None
started = time.time()
try:
    cf.magic_transit.pcaps.create(account_id=account, system="magic-transit", type="full", time_limit=10,
                                  colo_name="sfo", destination_conf=dest)
except cloudflare.ConflictError as e:
    conflict = [e.status_code, e.response.headers.get("x-should-retry"), round(time.time() - started, 2)]
assert conflict and conflict[2] < 2, conflict

time.sleep(1)
stopped = cf.with_options(max_retries=0).put(f"/accounts/{account}/pcaps/{p.id}/stop", cast_to=object)
assert stopped["result"]["stop_requested"], stopped

other = cf.magic_transit.pcaps.ownership.create(account_id=account, destination_conf=f"s3://{bucket}/tmp?region=us-east-1")
cf.magic_transit.pcaps.ownership.delete(other.id, account_id=account)
assert [x.id for x in cf.magic_transit.pcaps.ownership.get(account_id=account)] == [o.id]
print(json.dumps({"id": p.id, "conflict": conflict}))
