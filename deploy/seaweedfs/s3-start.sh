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

# Only the S3 gateway listens on the container's network (-s3.ip.bind): master, volume and filer
# bind to loopback, because the filer serves every bucket over plain HTTP without S3 auth and must
# not be reachable from the other containers. s3-init shares this container's network namespace
# (docker-compose.yml: network_mode service:s3), so it reaches master and filer on 127.0.0.1.
# The Iceberg and Lance endpoints are off (the stack only speaks S3), and so are usage reports.
exec weed server -dir=/data -ip="${SEAWEED_ADVERTISE_HOST:-127.0.0.1}" -ip.bind=127.0.0.1 \
  -volume.max=0 -master.volumeSizeLimitMB=1024 -master.telemetry=false \
  -s3 -s3.port=8333 -s3.ip.bind=0.0.0.0 -s3.config="$config" \
  -s3.port.iceberg=0 -s3.port.lance=0
