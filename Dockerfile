# vault-rotator container image.
#
#   docker build -t vault-rotator:dev .
#
# Two stages:
#   build    rust:<version>-bookworm compiles `cargo build --release --locked -p vault-rotator`.
#   runtime  gcr.io/distroless/cc-debian12:nonroot: no shell, no package manager, CA
#            certificates, glibc + libgcc_s, user 65532.
#
# Why glibc on distroless/cc instead of a static musl build on distroless/static or scratch:
# the build stage is Debian 12 (glibc 2.36) and so is the runtime, so the dynamically linked
# binary runs unchanged. It needs no extra rustup target, no musl-tools and no cross C
# compiler for `ring` (rustls' crypto), so the same Dockerfile builds natively for
# linux/amd64 and linux/arm64. Both options use rustls, never OpenSSL, so the image needs
# no libssl. The binary's own size and memory use are the same either way. A static musl
# build would save about 20 MB of base image and allow `FROM scratch`, at the cost of those
# extra build steps and musl's slower allocator. The binary only needs libc, libm, libgcc_s
# and the CA bundle, all of which distroless/cc has.
#
# Cache-friendly order: the manifests and Cargo.lock are copied first, and every dependency
# is compiled against stub sources. That layer is rebuilt only when Cargo.toml or Cargo.lock
# changes. Editing src/ recompiles only the vault-rotator crate.
#
# It needs no BuildKit-only syntax, so buildah, kaniko and classic `docker build` work too.
# For reproducible builds, pin both FROM lines by digest (`image:tag@sha256:...`).

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build

ENV CARGO_INCREMENTAL=0 \
    CARGO_NET_RETRY=5 \
    CARGO_TERM_COLOR=never

WORKDIR /src

# 1. Dependencies only. Every workspace member's manifest must be present for Cargo to
#    resolve the workspace and honour --locked. Each member gets an empty stub target.
COPY Cargo.toml Cargo.lock ./
COPY devvault/Cargo.toml devvault/Cargo.toml
COPY testkit/Cargo.toml testkit/Cargo.toml
RUN mkdir -p src devvault/src testkit/src \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > devvault/src/main.rs \
    && : > testkit/src/lib.rs \
    && cargo build --release --locked -p vault-rotator \
    && rm -rf src devvault/src testkit/src

# 2. The real sources. .dockerignore keeps target/, .git/, manifests/ and CI files out of
#    the context. The copied files can be older than the stubs above, and Cargo rebuilds by
#    mtime, so touch the crate roots or Cargo would reuse the stub build.
COPY . .
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked -p vault-rotator \
    && install -D -m 0755 target/release/vault-rotator /out/vault-rotator

# ---------------------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=""

LABEL org.opencontainers.image.title="vault-rotator" \
      org.opencontainers.image.description="A tiny sidecar that keeps a database credential from Vault/OpenBao fresh in a file" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=build /out/vault-rotator /usr/local/bin/vault-rotator

# Numeric UID:GID (distroless "nonroot"), so Kubernetes' runAsNonRoot can verify it without
# /etc/passwd. The process writes only to the mounted output volume, so it works with
# readOnlyRootFilesystem.
USER 65532:65532

# /health, /ready and /metrics. The listen address is set with --listen or VAULT_ROTATOR_LISTEN.
EXPOSE 8080

# Exec form, no shell: the binary is PID 1, receives SIGTERM directly and shuts down in
# order. There is no HEALTHCHECK because distroless has no curl; Kubernetes probes /health
# and /ready itself (see manifests/).
ENTRYPOINT ["/usr/local/bin/vault-rotator"]
