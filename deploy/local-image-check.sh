#!/usr/bin/env bash
# Build deploy/api.Dockerfile with buildah on a machine that has no Docker engine and reaches no
# image registry, then run the gateway from the built image. What deploy/README.md ("What was
# checked here") reports was run with this script; it is not part of CI (it needs root, Debian's
# buildah and debootstrap, and a few minutes).
#   sudo deploy/local-image-check.sh
# 1. a base image made locally: Debian bookworm (its python3 is 3.11, CI's minor version) from
#    Debian's packages with debootstrap, standing in for python:3.11-slim-bookworm, plus this
#    machine's CA bundle so pip trusts the same proxy the host does;
# 2. `buildah bud --isolation chroot` of the api image with that base (chroot isolation: this
#    sandbox refuses the setrlimit calls that crun makes for `podman run` and OCI isolation);
# 3. the image's `idbody api` run as uid 10001 in a buildah working container: it must refuse to
#    start without IDBODY_PUBLIC_API_URL, then serve /healthz with it, logging JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${WORK:-/tmp/idbody-image-check}"
base="${BASE:-localhost/idbody-python:3.11-bookworm}"
port="${PORT:-18777}"
export BUILDAH_ISOLATION=chroot

if ! buildah images -q "$base" 2>/dev/null | grep -q .; then
  rm -rf "$work/rootfs" && mkdir -p "$work/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$work/rootfs"
  ctr=$(buildah from scratch)
  buildah copy "$ctr" "$work/rootfs" / >/dev/null
  buildah run "$ctr" ln -sf python3 /usr/bin/python
  buildah copy "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$ctr"
  buildah commit --format docker "$ctr" "$base"
  buildah rm "$ctr" >/dev/null
fi

time buildah bud --format docker -f deploy/api.Dockerfile --build-arg PYTHON_IMAGE="$base" \
  -t localhost/identity-body-api:check .

ctr=$(buildah from localhost/identity-body-api:check)
trap 'buildah rm "$ctr" >/dev/null' EXIT
if buildah run --user 10001:10001 "$ctr" idbody api --port "$port"; then
  echo "FAIL: the gateway started in a container without IDBODY_PUBLIC_API_URL" >&2; exit 1
fi
timeout 60 buildah run --user 10001:10001 --env IDBODY_PUBLIC_API_URL="http://127.0.0.1:$port" \
  "$ctr" idbody api --host 127.0.0.1 --port "$port" > "$work/api.log" 2>&1 &
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/healthz" && break; sleep 1; done
echo; head -n 3 "$work/api.log"
