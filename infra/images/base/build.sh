#!/usr/bin/env bash
# Builds a Python base image without any image registry: debootstrap a minimal
# Debian from the package mirror, add a venv, and `docker import` the root.
# Used where Docker Hub cannot be reached; elsewhere python:3.12-slim serves.
#
#   infra/images/base/build.sh [IMAGE_NAME]     (default dockyard/python-base:bookworm)
set -euo pipefail
name="${1:-dockyard/python-base:bookworm}"
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "base image $name already present"
  exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
rootfs="$(mktemp -d /tmp/dockyard-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm into $rootfs (about a minute)"
debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,python3-pip,procps,iputils-ping \
  bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/tmp/dockyard-debootstrap.log
# This network's TLS proxy signs with local CAs: trust them inside the image
# too, or pip in a Dockerfile cannot reach PyPI.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null
fi
# The host's pip configuration (index mirror, constraints) travels with the image.
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$rootfs/etc/pip.conf"; fi
chroot "$rootfs" python3 -m venv /opt/venv
chroot "$rootfs" /opt/venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$name" >/dev/null
echo "built base image $name"
