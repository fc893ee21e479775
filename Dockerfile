# vault-rotator container image.
#
#   docker build -t vault-rotator:0.1.0 .        (or podman build; BuildKit is not needed)
#
# Two stages:
#   build    rust:<version>-bookworm compiles one static binary:
#            `cargo build --release --locked --target <host triple> -p vault-rotator` with
#            `-C target-feature=+crt-static` (glibc, statically linked; TLS is rustls + ring,
#            so there is no OpenSSL to link).
#   runtime  FROM scratch: the binary, Debian's CA bundle, /etc/nsswitch.conf, a passwd and
#            group file naming user 65532. Nothing else: no shell, no package manager, no
#            libc to patch. About the size of the binary.
#
# Why a static glibc binary on scratch (rather than dynamic glibc on distroless/cc, or musl):
#   - it needs no extra rustup target and no cross C compiler, so the same Dockerfile builds
#     natively on linux/amd64 and linux/arm64 from the standard rust image;
#   - glibc's allocator and resolver, not musl's (musl's resolver ignores some resolv.conf
#     options and its allocator is slow under tokio);
#   - glibc 2.34+ builds the `files` and `dns` NSS modules into libc itself, so a static
#     binary resolves names from /etc/hosts and DNS (resolv.conf, search domains, ndots)
#     without loading any shared library. Other NSS modules (mdns, ldap, ...) are not
#     available, which is right for a container. The /etc/nsswitch.conf below says
#     "hosts: files dns", the order Kubernetes' and podman's /etc/hosts need.
#
# Build arguments:
#   BUILD_IMAGE  the Rust build image. Tests substitute a local stand-in (see
#                scripts/image-standins.sh) because they cannot pull.
#   VERSION, REVISION, SOURCE  OCI labels.
#
# Cache-friendly order: the manifests and Cargo.lock are copied first, and every dependency
# is compiled against stub sources. That layer is rebuilt only when a manifest or Cargo.lock
# changes. Editing src/ recompiles only the vault-rotator crate (and the release LTO link).
# Cargo needs every workspace member's manifest to load the workspace: a new member must be
# added to both lists in step 1, or the first RUN fails ("failed to load manifest").
#
# For reproducible builds, pin BUILD_IMAGE by digest (`image:tag@sha256:...`).

ARG BUILD_IMAGE=docker.io/library/rust:1.95-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${BUILD_IMAGE} AS build

# Build scripts and proc macros run on the build machine and must stay dynamic, so the
# target triple is always passed explicitly: RUSTFLAGS then applies only to the target.
ENV CARGO_INCREMENTAL=0 \
    CARGO_NET_RETRY=5 \
    CARGO_TERM_COLOR=never \
    RUSTFLAGS="-C target-feature=+crt-static"

WORKDIR /src

# 1. Dependencies only. Every workspace member's manifest, each with empty stub targets.
COPY Cargo.toml Cargo.lock ./
COPY devvault/Cargo.toml devvault/Cargo.toml
COPY testkit/Cargo.toml testkit/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p src devvault/src testkit/src bench/src \
    && for f in src/main.rs devvault/src/main.rs bench/src/main.rs; do echo 'fn main() {}' > "$f"; done \
    && for f in src/lib.rs testkit/src/lib.rs bench/src/lib.rs; do : > "$f"; done \
    && cargo build --release --locked --target "$(rustc --print host-tuple)" -p vault-rotator \
    && rm -rf src devvault/src testkit/src bench/src

# 2. The real sources. .dockerignore keeps target/, .git/, manifests/ and CI files out of
#    the context. The copied files can be older than the stubs above, and Cargo rebuilds by
#    mtime, so touch the crate roots or Cargo would reuse the stub build.
COPY . .
RUN target="$(rustc --print host-tuple)" \
    && touch src/main.rs src/lib.rs \
    && cargo build --release --locked --target "$target" -p vault-rotator \
    && bin="target/$target/release/vault-rotator" \
    && readelf -d "$bin" > /tmp/dynamic \
    && if grep NEEDED /tmp/dynamic; then echo "$bin is not static" >&2; exit 1; fi \
    && "$bin" --version \
    && install -D -m 0755 "$bin" /out/usr/local/bin/vault-rotator \
    && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt \
    && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /out/etc/passwd \
    && printf 'root:x:0:\nnonroot:x:65532:\n' > /out/etc/group \
    && printf 'hosts: files dns\n' > /out/etc/nsswitch.conf

# ---------------------------------------------------------------------------------------------
FROM scratch

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=""

LABEL org.opencontainers.image.title="vault-rotator" \
      org.opencontainers.image.description="A tiny sidecar that keeps a database credential from Vault/OpenBao fresh in a file" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

COPY --from=build /out/ /

# Numeric UID:GID ("nonroot", as in distroless), so Kubernetes' runAsNonRoot can verify it
# without reading /etc/passwd. The process writes only to the mounted output volume, so it
# works with readOnlyRootFilesystem.
USER 65532:65532

# /health, /ready and /metrics. The listen address is set with --listen or VAULT_ROTATOR_LISTEN.
EXPOSE 8080

# Exec form, no shell: the binary is PID 1, receives SIGTERM directly and shuts down in
# order. There is no HEALTHCHECK because the image has no HTTP client; Kubernetes probes
# /health and /ready itself (see manifests/).
ENTRYPOINT ["/usr/local/bin/vault-rotator"]
