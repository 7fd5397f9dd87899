"""Bucket inspection for tests, signed with the test key.
Usage: bucket.py ENDPOINT ACCESS SECRET BUCKET (get KEY OUT | list PREFIX | uploads)"""
import sys

import boto3

endpoint, access, secret, bucket, cmd = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access, aws_secret_access_key=secret)
if cmd == "get":
    s3.download_file(bucket, sys.argv[6], sys.argv[7])
elif cmd == "list":
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=sys.argv[6])
    for page in pages:
        for o in page.get("Contents", []):
            print(o["Key"], o["Size"])
elif cmd == "uploads":
    print(len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])))
