#!/usr/bin/env bash
# The demo: a ~1M-row CSV generated, uploaded to local S3 (moto), loaded into DynamoDB Local.
# Everything it needs is installed by scripts/bootstrap.sh. ROWS=200000 make demo for a shorter one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# shellcheck disable=SC1091
. .venv/bin/activate
eval "$(s3ddb local up)"
ROWS="${ROWS:-1000000}"
DEMO=.s3ddb/demo
mkdir -p "$DEMO"
PYTHONPATH="$PWD" python scripts/demo_prepare.py --rows "$ROWS" --dir "$DEMO" --bucket s3ddb-demo --key "demo/rows-$ROWS.csv" --table s3ddb-demo
s3ddb load "s3://s3ddb-demo/demo/rows-$ROWS.csv" --table s3ddb-demo --schema "$DEMO/schema.json" \
  --rejects "$DEMO/rejects" --checkpoint "$DEMO/checkpoint.json"
echo
echo "The local services keep running: 'eval \"\$(s3ddb local up)\"' reuses them, 's3ddb local down' stops them."
