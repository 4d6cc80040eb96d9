#!/usr/bin/env bash
# Prints the name of a base image for Dockerfile.api / Dockerfile.worker that podman can build
# on here, making one if it has to:
#   1. $BASE_IMAGE, if set (any python:3.11-slim-bookworm-like image you already have);
#   2. the Dockerfiles' own base (python:3.11.11-slim-bookworm), if present or pullable;
#   3. otherwise a local equivalent: Debian bookworm (minbase) with Debian's Python 3.11, venv,
#      useradd and CA certificates, `python` on PATH as in the official image. Built with
#      debootstrap from Debian's archive, for machines that reach no container registry.
# Also prepares podman for this machine's sandbox (runc, no default ulimits or pids limit).
#
#   BASE=$(ops/images/base-image.sh)
#   podman --runtime runc build --network host --build-arg BASE_IMAGE=$BASE -f Dockerfile.api .
set -euo pipefail

OFFICIAL=docker.io/library/python:3.11.11-slim-bookworm
LOCAL=localhost/taskoverflow-base:3.11-bookworm

log() { echo "base-image: $*" >&2; }
export DEBIAN_FRONTEND=noninteractive
missing=()
for tool in podman runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Rootful podman inside a sandbox cannot set its default rlimits or a pids cgroup limit.
if [ ! -f /etc/containers/containers.conf ]; then
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\npids_limit = 0\n' >/etc/containers/containers.conf
fi
podman=(podman --runtime runc)

if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; exit 0; fi
for image in "$OFFICIAL" "$LOCAL"; do
  if "${podman[@]}" image exists "$image"; then echo "$image"; exit 0; fi
done
if timeout 60 "${podman[@]}" pull -q "$OFFICIAL" >/dev/null 2>&1; then echo "$OFFICIAL"; exit 0; fi

log "no registry reachable: building $LOCAL with debootstrap (about a minute)"
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,passwd,ca-certificates \
  bookworm "$root" >/dev/null
# Builds that install packages must trust what this machine trusts (e.g. an inspecting proxy).
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "${podman[@]}" import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$LOCAL" >/dev/null
echo "$LOCAL"
