"""Prepares a moto S3 server started with INITIAL_NO_AUTH_ACTION_COUNT=3 (SigV4 enforced after
three requests): creates an IAM user with an S3 policy and an access key (the three unsigned
requests), then the buckets, signed with that key. Prints `ACCESS_KEY SECRET_KEY`.
Usage: moto_setup.py ENDPOINT BUCKET [BUCKET...]"""
import json
import sys

import boto3

endpoint, buckets = sys.argv[1], sys.argv[2:]
anon = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
iam = boto3.client("iam", **anon)
iam.create_user(UserName="pcapd")
iam.put_user_policy(
    UserName="pcapd",
    PolicyName="s3",
    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}),
)
key = iam.create_access_key(UserName="pcapd")["AccessKey"]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
for b in buckets:
    s3.create_bucket(Bucket=b)
print(key["AccessKeyId"], key["SecretAccessKey"])
