#!/usr/bin/env bash
# Build the default base image without Docker Hub or ECR Public: a minimal Debian root file
# system made by mmdebstrap (Linux only), imported into Docker. An imported image has an empty
# config, so PATH is set here. It is tagged with the default's name (the official Python image
# of this Python's minor version, as nipype_batch.images.build.DEFAULT_BASE_IMAGE names it), so
# that an offline machine runs the same code path as one that pulls it, and as
# nipype-batch-base:bookworm.
# Usage: containers/base-image.sh [IMAGE_NAME]   (default: the default base image's name)
set -euo pipefail
py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
default="public.ecr.aws/docker/library/python:${py}-slim-bookworm"
name="${1:-$default}"
local_name="nipype-batch-base:bookworm"
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "base image $name already present"; exit 0
fi
if ! docker image inspect "$local_name" >/dev/null 2>&1; then
  command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install -y mmdebstrap" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$tmp/rootfs.tar"
  docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    "$tmp/rootfs.tar" "$local_name" >/dev/null
fi
docker tag "$local_name" "$name"
echo "built base image $name"
