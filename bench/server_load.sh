#!/usr/bin/env bash
# Server ingest benchmark, in one run: `periscope server` on a fresh SQLite file, on a fresh
# PostgreSQL database with one replica, and with two replicas sharing it (agents and readers
# spread over both). Simulated agents (crates/periscope-server/examples/ingest_load.rs) post
# batches of log events as fast as the server takes them while a client measures API read
# latency. Prints events/s and p50/p99 latency for each, and the ratios to SQLite.
# Usage: bench/server_load.sh [SECONDS] [AGENTS] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-10}; AGENTS=${2:-4}; BATCH=${3:-2000}   # 2000: what an agent sends at most per report
cargo build --release -q --bin periscope --example ingest_load -p periscope -p periscope-server
BIN=$PWD/target/release/periscope
DIR=$(mktemp -d); chmod 755 "$DIR"   # the postgres user reads its cluster directory below
PIDS=()
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -d "$DIR/pg" ] && as_pg "$PGBIN/pg_ctl" -D "$DIR/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server NAME DB: starts a server; its URL is in $DIR/NAME.url.
start_server() {
  local log="$DIR/$1.log"
  "$BIN" server --listen 127.0.0.1:0 --db "$2" --admin-token-file "$DIR/admin.token" > /dev/null 2> "$log" &
  PIDS+=($!)
  for _ in $(seq 300); do grep -q "listening on" "$log" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/.*listening on //p' "$log" > "$DIR/$1.url"
}

# run_load LABEL URLS: tokens and a probe through the first URL, then the load over all.
run_load() {
  local first=${2%%,*}
  export PERISCOPE_SERVER=$first PERISCOPE_TOKEN=$(cat "$DIR/admin.token")
  local agent viewer probe
  agent=$("$BIN" token create --role agent --name "load-agents-$1")
  viewer=$("$BIN" token create --role viewer --name "load-viewer-$1")
  probe=$("$BIN" probe add log service=load main.rs:42 "total={total}" --json | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
  echo "== $1: $AGENTS agents for ${SECONDS_RUN}s, batches of $BATCH events"
  "$PWD/target/release/examples/ingest_load" "$2" "$agent" "$viewer" "$probe" "$SECONDS_RUN" "$AGENTS" "$BATCH" | tee "$DIR/$1.out"
}

echo "nproc: $(nproc)"
start_server sqlite "$DIR/periscope.db"
run_load sqlite "$(cat "$DIR/sqlite.url")"
kill "${PIDS[@]}"; PIDS=(); rm -f "$DIR/admin.token"

if [ -n "$PGBIN" ]; then
  mkdir -p "$DIR/pg"; [ "$(id -u)" = 0 ] && chown postgres: "$DIR/pg"
  port=$(free_port)
  as_pg "$PGBIN/initdb" -D "$DIR/pg/data" -U postgres --auth=trust --no-sync >/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$DIR/pg" start >/dev/null
  as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres one
  as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres two
  start_server pg1 "postgres://postgres@127.0.0.1:$port/one"
  run_load postgres-1 "$(cat "$DIR/pg1.url")"
  kill "${PIDS[@]}"; PIDS=(); rm -f "$DIR/admin.token"
  start_server pg2a "postgres://postgres@127.0.0.1:$port/two"
  start_server pg2b "postgres://postgres@127.0.0.1:$port/two"
  run_load postgres-2 "$(cat "$DIR/pg2a.url"),$(cat "$DIR/pg2b.url")"
else
  echo "PostgreSQL not installed (apt-get install postgresql): its runs are skipped"
fi

echo "== summary (events/s; API p50 / p99 ms)"
base=$(sed -n 's/.*: \([0-9]*\) events\/s.*/\1/p' "$DIR/sqlite.out")
for f in "$DIR"/*.out; do
  name=$(basename "$f" .out)
  rate=$(sed -n 's/.*: \([0-9]*\) events\/s.*/\1/p' "$f")
  lat=$(sed -n 's/.*p50 \([0-9.]*\) ms, p99 \([0-9.]*\) ms.*/\1 \/ \2/p' "$f")
  ratio=$(python3 -c "print(f'{$rate/$base:.2f}')")
  printf '%-12s %9s events/s (%sx SQLite)   %s ms\n' "$name" "$rate" "$ratio" "$lat"
done
