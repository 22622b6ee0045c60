# syntax=docker/dockerfile:1
#
# One image per service, all from this file:
#
#   docker build --build-arg SERVICE=identity -t tandem-identity .
#
# SERVICE is identity, deals, tiers or commissions and selects the binary tandem-$SERVICE.
# Dependencies are compiled in their own layer (cargo-chef), so an edit to the services'
# code rebuilds only the workspace crates; the build layers are shared by the four images.
# The runtime image is distroless (glibc, CA certificates, no shell, no package manager)
# and runs as the non-root user 65532.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

# ---- chef: the toolchain and cargo-chef ------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
# Symbols stripped from the binaries; set for cook and build alike, so the dependency
# layer's profile matches the final build's and is reused.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# ---- planner: the dependency recipe (changes only when manifests or Cargo.lock do) -----
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- builder: dependencies from the recipe, then the four services -------------------
# The four binaries are built together, before SERVICE is declared (a build argument
# invalidates every RUN after it): cook and build then resolve the same features, and
# both layers are the same for all four images, so building them all (skaffold) compiles
# once. SERVICE only picks the binary.
FROM chef AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PACKAGES="-p tandem-identity -p tandem-deals -p tandem-tiers -p tandem-commissions"
COPY --from=planner /src/recipe.json recipe.json
# hadolint ignore=SC2086
RUN cargo chef cook --release --locked --recipe-path recipe.json ${PACKAGES}
COPY . .
# COPY keeps the sources' modification times, which are older than the placeholders cook
# compiled; touch them so cargo rebuilds the workspace crates and reruns proto/build.rs
# (protox, pure Rust: no protoc needed).
# hadolint ignore=SC2086
RUN find proto services -type f -exec touch {} + \
 && cargo build --release --locked ${PACKAGES}
ARG SERVICE
RUN case "${SERVICE}" in \
      identity|deals|tiers|commissions) ;; \
      *) echo "--build-arg SERVICE must be identity, deals, tiers or commissions (got '${SERVICE}')" >&2; exit 1 ;; \
    esac \
 && mkdir -p /out/bin \
 && cp "target/release/tandem-${SERVICE}" /out/bin/ \
 && ln -s "tandem-${SERVICE}" /out/bin/tandem-service

# ---- runtime ---------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
ARG SERVICE
LABEL org.opencontainers.image.title="tandem-${SERVICE}" \
      org.opencontainers.image.description="Tandem ${SERVICE} service (gRPC)" \
      org.opencontainers.image.licenses="Apache-2.0"
# tandem-$SERVICE, and tandem-service: a link to it, so the entrypoint is the same in every
# image (an exec-form ENTRYPOINT cannot expand a build argument).
COPY --from=builder /out/bin/ /usr/local/bin/
USER 65532:65532
# 50051: gRPC (and grpc.health.v1 for the probes); 9090: admin HTTP (/metrics, /livez, /readyz).
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/tandem-service"]
CMD ["serve"]
