#!/usr/bin/env bash
# Builds a Python base image without any image registry: debootstrap a minimal
# Debian from this machine's own package mirror, add a venv, and `docker import`
# the root. Used where Docker Hub cannot be reached; elsewhere python:3.12-slim serves.
#
#   infra/images/base/build.sh [IMAGE_NAME]     (default dockyard/python-base:bookworm)
#
# The mirror is the one apt uses here for bookworm's main component (from
# /etc/apt/sources.list, sources.list.d/*.list and *.sources); set
# DOCKYARD_DEBIAN_MIRROR to a Debian mirror's URL to use another.
set -euo pipefail
name="${1:-dockyard/python-base:bookworm}"
if docker image inspect "$name" >/dev/null 2>&1; then
  echo "base image $name already present"
  exit 0
fi

# The URI of the first enabled `deb` source of bookworm's main component that
# debootstrap can fetch from (http, https, ftp or file).
apt_mirror() {
  local lists=() sources=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && lists+=("$f"); done
  for f in /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && sources+=("$f"); done
  {
    # One-line style: deb [options] URI SUITE COMPONENT...
    [ ${#lists[@]} -eq 0 ] || awk '$1 == "deb" {
        i = 2
        if ($2 ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) != "bookworm") next
        for (j = i + 2; j <= NF && $j !~ /^#/; j++) if ($j == "main") { print $i; next }
      }' "${lists[@]}"
    # deb822 style: paragraphs of Types:, URIs:, Suites:, Components: (and Enabled:).
    [ ${#sources[@]} -eq 0 ] || awk 'BEGIN { RS = ""; FS = "\n" } {
        split("", field); key = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^#/) continue
          if ($i ~ /^[ \t]/ && key != "") { field[key] = field[key] " " $i; continue }
          colon = index($i, ":"); if (!colon) continue
          key = tolower(substr($i, 1, colon - 1)); field[key] = " " substr($i, colon + 1) " "
        }
        if (tolower(field["enabled"]) ~ /no/) next
        if (field["types"] !~ /[ \t]deb[ \t]/ || field["suites"] !~ /[ \t]bookworm[ \t]/) next
        if (field["components"] !~ /[ \t]main[ \t]/) next
        n = split(field["uris"], uri, /[ \t]+/)
        for (k = 1; k <= n; k++) if (uri[k] != "") print uri[k]
      }' "${sources[@]}"
  } | { grep -E '^(https?|ftp|file)://' || true; } | head -n 1
}
mirror="${DOCKYARD_DEBIAN_MIRROR:-$(apt_mirror)}"
if [ -z "$mirror" ]; then
  echo "build.sh: found no apt source for Debian bookworm's main component in /etc/apt/sources.list" \
    "or /etc/apt/sources.list.d/; set DOCKYARD_DEBIAN_MIRROR to a Debian mirror's URL" \
    "(the URI of a 'deb' line for bookworm) and run it again" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
rootfs="$(mktemp -d /tmp/dockyard-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm from $mirror into $rootfs (about a minute)"
debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,python3-pip,procps,iputils-ping \
  bookworm "$rootfs" "$mirror" >/tmp/dockyard-debootstrap.log
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
