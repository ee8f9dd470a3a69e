"""Demo set-up: generate the CSV (once per row count), upload it to local S3, (re)create the table."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import boto3


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--table", required=True)
    args = ap.parse_args()

    from benchmarks.gen import generate

    out = Path(args.dir)
    csv_path = out / f"rows-{args.rows}.csv"
    schema_path = out / "schema.json"
    if not csv_path.exists() or not schema_path.exists():
        print(f"generating {args.rows:,} rows -> {csv_path}", file=sys.stderr)
        generated = generate(str(csv_path), rows=args.rows)
        shutil.copyfile(generated.schema_path, schema_path)

    s3 = boto3.client("s3")
    try:
        s3.create_bucket(Bucket=args.bucket)
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        pass
    print(f"uploading to s3://{args.bucket}/{args.key}", file=sys.stderr)
    s3.upload_file(str(csv_path), args.bucket, args.key)

    ddb = boto3.client("dynamodb")
    try:
        ddb.delete_table(TableName=args.table)
        ddb.get_waiter("table_not_exists").wait(TableName=args.table)
    except ddb.exceptions.ResourceNotFoundException:
        pass
    ddb.create_table(
        TableName=args.table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=args.table)
    print(f"table {args.table} is empty and ready", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
