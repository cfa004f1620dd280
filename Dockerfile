# Periscope's container image: one binary for the server, the agent and the CLI.
#
#   docker build -t periscope .
#   docker run --rm -p 7700:7700 periscope server --listen 0.0.0.0:7700 --db /data/periscope.db
#
# The build stage compiles the release binary; the final stage is a slim Debian with only
# that binary and CA certificates. The binary links nothing but glibc: SQLite is compiled in
# (rusqlite's bundled build) and TLS is rustls, so no OpenSSL or libpq is needed at run time.

FROM rust:1-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libbpf-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin periscope \
 && strip target/release/periscope

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/periscope /usr/local/bin/periscope
# The server runs as an unprivileged user; the agent's DaemonSet runs it as root with only
# the capabilities it needs (see deploy/kubernetes/agent.yaml).
RUN useradd --system --uid 10001 --home-dir /var/lib/periscope --create-home periscope
USER 10001
WORKDIR /var/lib/periscope
EXPOSE 7700
ENTRYPOINT ["periscope"]
CMD ["server", "--listen", "0.0.0.0:7700"]
