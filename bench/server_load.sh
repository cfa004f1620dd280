#!/usr/bin/env bash
# Server ingest benchmark: starts `periscope server` on a fresh SQLite file and drives it with
# simulated agents (crates/periscope-server/examples/ingest_load.rs) posting batches of log
# events, while a client measures API read latency. Prints events/s and p50/p99 latency.
# Usage: bench/server_load.sh [SECONDS] [AGENTS] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-10}; AGENTS=${2:-4}; BATCH=${3:-500}
cargo build --release -q --bin periscope --example ingest_load -p periscope -p periscope-server
BIN=target/release/periscope
DIR=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DIR"' EXIT
"$BIN" server --listen 127.0.0.1:0 --db "$DIR/periscope.db" 2> "$DIR/server.log" &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$DIR/server.log" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/.*listening on //p' "$DIR/server.log")
export PERISCOPE_SERVER=$URL PERISCOPE_TOKEN=$(cat "$DIR/admin.token")
AGENT=$("$BIN" token create --role agent --name load-agents)
VIEWER=$("$BIN" token create --role viewer --name load-viewer)
PROBE=$("$BIN" probe add log service=load main.rs:42 "total={total}" --json | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
echo "server $URL, probe $PROBE; $AGENTS agents for ${SECONDS_RUN}s, batches of $BATCH events (nproc: $(nproc))"
target/release/examples/ingest_load "$URL" "$AGENT" "$VIEWER" "$PROBE" "$SECONDS_RUN" "$AGENTS" "$BATCH"
echo "stored: $("$BIN" events "$PROBE" --limit 1 --json | wc -l) event(s) readable; db $(du -h "$DIR/periscope.db" | cut -f1)"
