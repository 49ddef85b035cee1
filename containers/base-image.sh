#!/usr/bin/env bash
# Build the default base image without Docker Hub or ECR Public: a minimal Debian root file
# system made by mmdebstrap (Linux only), loaded into Docker as a one-layer image whose config
# sets PATH and names its CPU. It is tagged with the default's name (the official Python image
# of this Python's minor version, as nipype_batch.images.build.DEFAULT_BASE_IMAGE names it), so
# that an offline machine runs the same code path as one that pulls it, and as
# nipype-batch-base:bookworm.
# Usage: containers/base-image.sh [IMAGE_NAME [ARCH]]
#   IMAGE_NAME  default: the default base image's name
#   ARCH        amd64 (default) or arm64; arm64 needs qemu-user-static and binfmt_misc
#               (scripts/bootstrap.sh --arm64 sets them up) and is tagged only as IMAGE_NAME
set -euo pipefail
py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
default="public.ecr.aws/docker/library/python:${py}-slim-bookworm"
name="${1:-$default}"
arch="${2:-amd64}"
local_name="nipype-batch-base:bookworm"
[ "$arch" = amd64 ] || local_name="nipype-batch-base:bookworm-$arch"
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "base image $name already present"; exit 0
fi
if ! docker image inspect "$local_name" >/dev/null 2>&1; then
  command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install -y mmdebstrap" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mmdebstrap --quiet --variant=minbase --architectures="$arch" \
    --include=python3,python3-venv,ca-certificates bookworm "$tmp/rootfs.tar"
  # `docker load` of a one-layer image whose config names its CPU (`docker import` records
  # the daemon's own, whatever --platform says, on Docker 20.10)
  python3 - "$tmp" "$arch" "$local_name" <<'PY'
import hashlib, json, os, sys, tarfile
tmp, arch, name = sys.argv[1:]
layer = os.path.join(tmp, "rootfs.tar")
digest = hashlib.sha256()
with open(layer, "rb") as fh:
    for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
config = {"architecture": arch, "os": "linux",
          "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                             "LANG=C.UTF-8"]},
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + digest.hexdigest()]}}
with open(os.path.join(tmp, "config.json"), "w") as fh:
    json.dump(config, fh)
with open(os.path.join(tmp, "manifest.json"), "w") as fh:
    json.dump([{"Config": "config.json", "RepoTags": [name], "Layers": ["rootfs.tar"]}], fh)
with tarfile.open(os.path.join(tmp, "image.tar"), "w") as out:
    for member in ("manifest.json", "config.json", "rootfs.tar"):
        out.add(os.path.join(tmp, member), arcname=member)
PY
  docker load -q -i "$tmp/image.tar" >/dev/null
fi
docker tag "$local_name" "$name"
echo "built base image $name"
