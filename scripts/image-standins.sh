#!/usr/bin/env bash
# image-standins.sh: local stand-ins for the Dockerfile's base images, for machines that can
# reach Debian's package mirror but no container registry (CI, air-gapped labs).
#
#   scripts/image-standins.sh            build the stand-ins that are missing
#   scripts/image-standins.sh --force    rebuild both
#
# It builds, with mmdebstrap from Debian's packages, and imports into podman:
#   $STANDIN_DEBIAN  a minimal Debian bookworm (minbase + ca-certificates). The container test
#                    runs the example app in it.
#   $STANDIN_RUST    the same plus gcc and libc6-dev, and this machine's Rust toolchain (the
#                    sysroot of `rustc` on PATH, docs left out) laid out like the official
#                    rust:bookworm image (CARGO_HOME=/usr/local/cargo, RUSTUP_HOME=/usr/local/rustup).
#                    It replaces docker.io/library/rust:<version>-bookworm as BUILD_IMAGE.
# The runtime stage is FROM scratch, which needs no stand-in.
#
# Both get this machine's CA bundle (/etc/ssl/certs/ca-certificates.crt): a proxy that
# re-signs TLS must be trusted inside the build container too, or cargo cannot fetch crates.
#
# Needs root (mmdebstrap's root mode), podman, mmdebstrap. Takes about a minute per image.
# Set CONTAINERS_CONF=.ci/containers.conf on machines that need it (see that file).
set -euo pipefail

cd "$(dirname "$0")/.."

STANDIN_DEBIAN=${STANDIN_DEBIAN:-localhost/vault-rotator-standin/debian:bookworm}
STANDIN_RUST=${STANDIN_RUST:-localhost/vault-rotator-standin/rust:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

force=0
[ "${1:-}" = "--force" ] && force=1

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "image-standins: $1 not found" >&2; exit 1; }
}
need podman
need mmdebstrap
need rustc

have_image() { podman image exists "$1"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# debootstrap NAME TARBALL PACKAGES [HOOK...]: a minbase bookworm tarball.
debootstrap() {
  local name=$1 tarball=$2 packages=$3
  shift 3
  echo "image-standins: mmdebstrap $name ($packages)"
  mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" \
    --customize-hook="cp '$CA_BUNDLE' \"\$1$CA_BUNDLE\"" \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
    "$@" bookworm "$tarball" "$MIRROR"
}

if [ "$force" = 1 ] || ! have_image "$STANDIN_DEBIAN"; then
  debootstrap debian "$tmp/debian.tar" ca-certificates
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    "$tmp/debian.tar" "$STANDIN_DEBIAN" >/dev/null
  echo "image-standins: $STANDIN_DEBIAN imported"
else
  echo "image-standins: $STANDIN_DEBIAN present"
fi

if [ "$force" = 1 ] || ! have_image "$STANDIN_RUST"; then
  sysroot=$(rustc --print sysroot)
  version=$(rustc --version | awk '{print $2}')
  host=$(rustc -vV | sed -n 's/^host: //p')
  toolchain="/usr/local/rustup/toolchains/$version-$host"
  # The toolchain without its HTML docs (about 800 MB); rustc, cargo and the std library
  # for the host target are all a build needs.
  tar -C "$sysroot" --exclude=./share/doc -cf "$tmp/toolchain.tar" .
  debootstrap rust "$tmp/rust.tar" ca-certificates,gcc,libc6-dev \
    --customize-hook="mkdir -p \"\$1$toolchain\" \"\$1/usr/local/cargo/bin\"" \
    --customize-hook="tar -C \"\$1$toolchain\" -xf '$tmp/toolchain.tar'" \
    --customize-hook="for b in cargo rustc rustdoc; do ln -s $toolchain/bin/\$b \"\$1/usr/local/cargo/bin/\$b\"; done"
  podman import --quiet \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change "ENV RUST_VERSION=$version" \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    "$tmp/rust.tar" "$STANDIN_RUST" >/dev/null
  echo "image-standins: $STANDIN_RUST imported (Rust $version, $host)"
else
  echo "image-standins: $STANDIN_RUST present"
fi
