# syntax=docker/dockerfile:1
#
# One image per service, all from this file:
#
#   docker build --build-arg SERVICE=identity -t tandem-identity .
#
# SERVICE is identity, deals, tiers or commissions and selects the binary tandem-$SERVICE.
# Dependencies are compiled in their own layer (cargo-chef), so an edit to the services'
# code rebuilds only the workspace crates. The runtime image is distroless (glibc, CA
# certificates, no shell, no package manager) and runs as the non-root user 65532.

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

# ---- builder: dependencies from the recipe, then the service --------------------------
FROM chef AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=planner /src/recipe.json recipe.json
# The whole workspace's dependencies, before SERVICE is declared: the layer is the same for
# the four images, so building all of them (skaffold) compiles the dependencies once.
RUN cargo chef cook --release --locked --recipe-path recipe.json
ARG SERVICE
RUN case "${SERVICE}" in \
      identity|deals|tiers|commissions) ;; \
      *) echo "--build-arg SERVICE must be identity, deals, tiers or commissions (got '${SERVICE}')" >&2; exit 1 ;; \
    esac
COPY . .
# COPY keeps the sources' modification times, which are older than the placeholders cook
# compiled; touch them so cargo rebuilds the workspace crates and reruns proto/build.rs
# (protox, pure Rust: no protoc needed).
RUN find proto services -type f -exec touch {} + \
 && cargo build --release --locked --package "tandem-${SERVICE}" --bin "tandem-${SERVICE}" \
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
