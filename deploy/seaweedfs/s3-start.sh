#!/bin/sh
# Start SeaweedFS (master, volume, filer and the S3 gateway in one process) with the S3
# credentials the application uses. The identities file is written at start from the environment
# (the same S3 access key names shared.settings reads), so no secret lives in an image or in git.
# The defaults equal the Settings defaults; tests/deploy/test_deploy_config.py keeps them in step.
set -eu
umask 077

access_key="${IDBODY_S3_ACCESS_KEY:-idbody}"
secret_key="${IDBODY_S3_SECRET_KEY:-idbody-secret-change-me}"

json_escape() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

config="$(mktemp "${TMPDIR:-/tmp}/idbody-s3-identities.XXXXXX")"
printf '{"identities":[{"name":"idbody","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","List","Tagging","Write"]}]}\n' \
  "$(json_escape "$access_key")" "$(json_escape "$secret_key")" > "$config"

# The Iceberg and Lance endpoints are off: the stack only speaks S3.
# -ip is the name other containers reach this one by (the compose service name), so the filer
# address the master hands to 'weed shell' in s3-init resolves there too.
exec weed server -dir=/data -ip="${SEAWEED_ADVERTISE_HOST:-s3}" -ip.bind=0.0.0.0 \
  -volume.max=0 -master.volumeSizeLimitMB=1024 \
  -s3 -s3.port=8333 -s3.config="$config" \
  -s3.port.iceberg=0 -s3.port.lance=0
