#!/bin/sh
# Create the uploads and results buckets once (s3-init in docker-compose.yml). Idempotent:
# 's3.bucket.create' fails on an existing bucket, so only missing ones are created, and the
# script exits non-zero unless both are listed afterwards. '--check' only checks (healthcheck).
# Bucket defaults equal the Settings defaults; tests/deploy/test_deploy_config.py keeps them in step.
set -eu

uploads="${IDBODY_S3_BUCKET_UPLOADS:-idbody-uploads}"
results="${IDBODY_S3_BUCKET_RESULTS:-idbody-results}"
master="${SEAWEED_MASTER:-127.0.0.1:9333}"
filer="${SEAWEED_FILER:-127.0.0.1:8888}"

list_buckets() {
  echo "s3.bucket.list" | timeout "${SEAWEED_SHELL_TIMEOUT_S:-60}" weed shell -master="$master" -filer="$filer" 2>/dev/null \
    | awk '{print $1}'
}

has_bucket() {
  printf '%s\n' "$existing" | grep -qx "$1"
}

existing="$(list_buckets)"
if [ "${1:-}" != "--check" ]; then
  for bucket in "$uploads" "$results"; do
    if has_bucket "$bucket"; then
      echo "bucket $bucket exists"
    else
      echo "s3.bucket.create -name $bucket" | timeout "${SEAWEED_SHELL_TIMEOUT_S:-60}" weed shell -master="$master" -filer="$filer"
    fi
  done
  existing="$(list_buckets)"
fi

for bucket in "$uploads" "$results"; do
  has_bucket "$bucket" || { echo "bucket $bucket is missing" >&2; exit 1; }
done
echo "buckets ready: $uploads $results"
