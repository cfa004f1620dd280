#!/usr/bin/env bash
# Installs what Periscope needs on a fresh Debian machine, builds it, starts a sample process and
# shows live log lines from a source line inside it for a few seconds, without restarting it.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
command -v curl >/dev/null || missing+=(curl ca-certificates)
# The in-kernel engine's BPF program is compiled by clang with libbpf's headers.
command -v clang >/dev/null || missing+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  [ -f "$HOME/.cargo/env" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

cargo build --release -q
mkdir -p target/demo
rustc -g -o target/demo/ledger examples/targets/ledger.rs

target/demo/ledger 200000 2 > /dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 0.3
line=$(grep -n 'PROBE: settle-total' examples/targets/ledger.rs | cut -d: -f1)

echo "== a sample process (pid $pid) settles transfers; its source line ledger.rs:$line is:"
sed -n "${line}p" examples/targets/ledger.rs
echo "== periscope attaches and logs that line live for 5 seconds (the process is never restarted):"
# ptrace needs root or CAP_SYS_PTRACE on most distributions.
as_root target/release/periscope log "$pid" "ledger.rs:$line" \
  'seq={t.seq} amount={t.amount_cents} fee={fee} owner={t.from.owner} memo={t.memo}' --for 5s
echo "== detached; the process still runs untouched:"
grep -E 'State|TracerPid' "/proc/$pid/status"
echo "== periscope is at $PWD/target/release/periscope; put it on your PATH with:"
echo "   sudo install -m 755 target/release/periscope /usr/local/bin/periscope"
