# The archiver's binaries: archiver-coordinator, archiver-worker, and archiver-loadtest (with
# psql and zstd, which its compare and large-batch scenarios use for the raw baseline).
#
#   docker build -t audit-archiver .
#   docker run --rm -v $PWD/deploy/config.yaml:/etc/archiver/config.yaml:ro audit-archiver \
#     archiver-worker --config /etc/archiver/config.yaml
#
# compose.yaml builds it for the `coordinator` and `worker` services.

FROM rust:1-bookworm AS builder
WORKDIR /src
# Only the workspace's sources: every member of Cargo.toml's workspace (a missing one fails the
# build), nothing else (.dockerignore keeps target/ and .git out of the context).
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY engine engine
COPY worker worker
COPY coordinator coordinator
COPY loadtest loadtest
COPY testkit testkit
RUN cargo build --release --locked -p archiver-coordinator -p archiver-worker -p archiver-loadtest

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql-client zstd \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /src/target/release/archiver-coordinator /src/target/release/archiver-worker \
     /src/target/release/archiver-loadtest /usr/local/bin/
RUN useradd --system --create-home --home-dir /var/lib/archiver --uid 10001 archiver
USER archiver
WORKDIR /var/lib/archiver
CMD ["archiver-worker", "--help"]
