"""Provision the moto S3 server for the tests: a user with an s3:* policy and its key pair, then
IAM authentication on (requests signed with any other key are refused). ``check`` verifies that the
saved keys still work (moto forgets everything when restarted).

Usage: provision.py provision|check URL CREDENTIALS_JSON
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


def client(service: str, url: str, key: str = "bootstrap", secret: str = "bootstrap"):
    import boto3

    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def set_auth(url: str, free_requests: str) -> None:
    """moto's own endpoint: how many requests go unauthenticated from now on ("inf": all; "0": none)."""
    req = urllib.request.Request(
        f"{url}/moto-api/reset-auth",
        data=free_requests.encode(),
        method="POST",
        headers={"Content-Type": "application/octet-stream"},
    )
    urllib.request.urlopen(req, timeout=10).read()


def provision(url: str, out: str) -> None:
    set_auth(url, "inf")
    iam = client("iam", url)
    try:
        iam.create_user(UserName="survey-engine-test")
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    iam.put_user_policy(UserName="survey-engine-test", PolicyName="s3-all", PolicyDocument=json.dumps(POLICY))
    for old in iam.list_access_keys(UserName="survey-engine-test")[
        "AccessKeyMetadata"
    ]:  # a re-provisioning: at most 2 keys
        iam.delete_access_key(UserName="survey-engine-test", AccessKeyId=old["AccessKeyId"])
    key = iam.create_access_key(UserName="survey-engine-test")["AccessKey"]
    creds = {"endpoint_url": url, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    fd = os.open(out + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f)
    os.replace(out + ".tmp", out)
    set_auth(url, "0")
    check(url, out)


def check(url: str, path: str) -> None:
    with open(path) as f:
        creds = json.load(f)
    client("s3", url, creds["key"], creds["secret"]).list_buckets()


if __name__ == "__main__":
    action, url, path = sys.argv[1:4]
    {"provision": provision, "check": check}[action](url, path)
