#!/usr/bin/env bash
# Build the default base image without Docker Hub: a minimal Debian root file system made by
# mmdebstrap, imported into Docker. An imported image has an empty config, so PATH is set here.
# Usage: containers/base-image.sh [IMAGE_NAME]   (default nipype-batch-base:bookworm)
set -euo pipefail
name="${1:-nipype-batch-base:bookworm}"
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "base image $name already present"; exit 0
fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install -y mmdebstrap" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$tmp/rootfs.tar"
docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' \
  "$tmp/rootfs.tar" "$name" >/dev/null
echo "built base image $name"
