#!/usr/bin/env bash
# Build the Dockerfile with buildah, without Docker Hub: the Python base image is made here with
# debootstrap (Debian bookworm, its python3) and given to the Dockerfile as PYTHON_IMAGE. The base is
# made once and cached (a rootfs tarball under the cache folder, and an image in buildah's store); the
# project's image is rebuilt on every call, from buildah's layer cache where nothing changed.
# Prints the image's name. Needs root, buildah and debootstrap (Debian packages).
#   LIPSERVICE_CACHE   cache root (default ~/.cache/lipservice-proxy)
#   IMAGE              the tag to build (default localhost/lipservice-proxy:dev)
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${LIPSERVICE_CACHE:-$HOME/.cache/lipservice-proxy}"
image="${IMAGE:-localhost/lipservice-proxy:dev}"
base=localhost/lipservice-python-base:bookworm
rootfs_tar="$cache/python-base-bookworm.tar"
ca_bundle=/etc/ssl/certs/ca-certificates.crt

# The Debian mirror this machine's apt already uses (deb822 sources or a classic sources.list).
debian_mirror() {
  local uri
  uri=$(grep -hs -m1 -E '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true)
  [ -n "$uri" ] || uri=$(grep -hs -m1 -E '^deb .*/debian ' /etc/apt/sources.list | awk '{print $2}' || true)
  [ -n "$uri" ] || { echo "build-image: no Debian mirror in /etc/apt sources" >&2; exit 1; }
  echo "$uri"
}

if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  mkdir -p "$cache"
  if [ ! -f "$rootfs_tar" ]; then
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
      bookworm "$rootfs" "$(debian_mirror)" >"$cache/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$rootfs"
  fi
  container=$(buildah from scratch)
  buildah add "$container" "$rootfs_tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$container"
  buildah commit -q "$container" "$base" >/dev/null
  buildah rm "$container" >/dev/null
fi

# --format docker keeps the HEALTHCHECK (the OCI image format has no such field); chroot isolation
# because this sandbox refuses the namespaces and rlimits of the default runtime; the host's CA bundle
# is mounted for the RUN steps (not copied into the image), so that pip trusts what the host trusts.
buildah bud --quiet --layers --isolation chroot --format docker \
  -v "$ca_bundle:$ca_bundle:ro" \
  --build-arg PYTHON_IMAGE="$base" -t "$image" . >/dev/null
echo "$image"
