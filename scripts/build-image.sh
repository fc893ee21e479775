#!/usr/bin/env bash
# build-image.sh: build the vault-rotator image with podman from the local stand-in base
# images, reusing this machine's cargo download cache. CI and tests/container_e2e.rs use it.
#
#   scripts/build-image.sh [TAG]          default TAG: localhost/vault-rotator:ci
#
# With a registry at hand, plain `podman build -t vault-rotator .` (or docker build) is all
# a user needs; this script only adds what a machine without one needs:
#   - BUILD_IMAGE is the stand-in from scripts/image-standins.sh (built when missing);
#   - the cargo download cache ($CARGO_HOME/registry, filled by `cargo fetch --locked`) is
#     mounted into the build, so no crate is downloaded twice. Mounts are not part of any
#     layer, so the image is the same as without it;
#   - --network host: the build container reaches crates.io the way the machine does.
# The revision is set with --label rather than the REVISION build argument: podman's layer
# cache (buildah 1.28) ignores a changed build argument and would keep a stale label.
# podman's layer cache does the rest: with unchanged manifests the dependency layer is
# reused; with unchanged sources the whole build is a cache hit.
#
# Prints the build time and the image size. Honours CONTAINERS_CONF (CI uses
# .ci/containers.conf).
set -euo pipefail

cd "$(dirname "$0")/.."

TAG=${1:-localhost/vault-rotator:ci}
STANDIN_RUST=${STANDIN_RUST:-localhost/vault-rotator-standin/rust:bookworm}
REGISTRY_CACHE=${CARGO_HOME:-$HOME/.cargo}/registry

if ! podman image exists "$STANDIN_RUST"; then
  scripts/image-standins.sh
fi

volumes=()
if [ -d "$REGISTRY_CACHE" ]; then
  volumes=(--volume "$REGISTRY_CACHE:/usr/local/cargo/registry")
fi

# podman's layer cache (buildah 1.28) keys a COPY on the files' modes as well as their bytes,
# so a checkout made under another umask (0664 files instead of 0644) would miss the cache on
# the first COPY and recompile every dependency. Build from a staged copy of the files git
# knows (tracked, plus untracked ones not ignored: the working tree as it is) with normalized
# modes (0644, 0755 when executable), owner and mtime (1970). The Dockerfile touches the crate
# roots, so Cargo still rebuilds the crate from the sources.
context=.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  git ls-files -z --cached --others --exclude-standard \
    | xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh \
    | tar --null --files-from=- --owner=0 --group=0 --numeric-owner -cf - \
    | tar -xf - -C "$context"
  # Directories too: `COPY . .` sees them.
  chmod -R u=rwX,go=rX "$context"
  find "$context" -exec touch -h -d @0 {} +
fi

start=$SECONDS
podman build --network host --layers --file Dockerfile \
  --build-arg "BUILD_IMAGE=$STANDIN_RUST" \
  --label "org.opencontainers.image.revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "${volumes[@]}" \
  --tag "$TAG" "$context"
size=$(podman image inspect --format '{{.Size}}' "$TAG")
echo "build-image: $TAG built in $((SECONDS - start))s, $((size / 1000)) kB ($size bytes)"
