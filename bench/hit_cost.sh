#!/usr/bin/env bash
# Cost per hit of a dynamic log probe: periscope vs gdb dprintf vs bpftrace (uprobe + printf),
# on the same function of the same loop target, measured in one run. Prints per-hit microseconds
# and ratios, first with everything free to run on any CPU, then with all of it pinned to CPU 0.
# Not a test: numbers vary with the machine. Usage: bench/hit_cost.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
command -v gdb >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq gdb; }
command -v bpftrace >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq bpftrace || true; }

cargo build --release -q
work=target/bench
mkdir -p "$work"
gcc -g -O0 -o "$work/hot" examples/targets/hot.c
line=$(grep -n 'PROBE: hot-step' examples/targets/hot.c | cut -d: -f1)
exe=$(realpath "$work/hot")

# run_one PIN TOOL → prints ns per iteration of the target's loop with TOOL attached.
run_one() {
  local pin=$1 tool=$2 pre=()
  [ "$pin" = pinned ] && pre=(taskset -c 0)
  local fifo="$work/go.fifo" out="$work/target.out" log="$work/tool.log"
  rm -f "$fifo"; mkfifo "$fifo"
  "${pre[@]}" "$exe" "$N" 0 wait < "$fifo" > "$out" &
  local tpid=$!
  exec 7> "$fifo"
  until grep -q ready "$out" 2>/dev/null; do sleep 0.05; done
  local ppid=""
  case $tool in
    none) ;;
    periscope)
      "${pre[@]}" target/release/periscope log "$tpid" "hot.c:$line" 'i={i}' > /dev/null 2> "$log" &
      ppid=$!
      until grep -q probing "$log" 2>/dev/null; do sleep 0.05; done ;;
    gdb)
      "${pre[@]}" gdb -q -p "$tpid" -batch -ex "dprintf hot.c:$line,\"i=%ld\\n\",i" -ex continue > /dev/null 2> "$log" &
      ppid=$!
      # gdb prints nothing once the dprintf is in; wait until the target is traced by it.
      until grep -q "TracerPid:[[:space:]]*$ppid" "/proc/$tpid/status" 2>/dev/null; do sleep 0.05; done
      sleep 1 ;;
    bpftrace)
      "${pre[@]}" bpftrace -e "uprobe:$exe:step { printf(\"i=%ld\\n\", arg0); }" > "$log" 2>&1 &
      ppid=$!
      until grep -q Attaching "$log" 2>/dev/null; do sleep 0.05; done
      sleep 1 ;;
  esac
  echo go >&7
  exec 7>&-
  wait "$tpid" || true
  [ -n "$ppid" ] && { kill -INT "$ppid" 2>/dev/null || true; wait "$ppid" 2>/dev/null || true; }
  grep -o 'ns_per_iter=[0-9.]*' "$out" | cut -d= -f2
}

for pin in free pinned; do
  base=$(run_one "$pin" none)
  declare -A us=()
  for tool in periscope gdb bpftrace; do
    if [ "$tool" = bpftrace ] && ! command -v bpftrace >/dev/null; then continue; fi
    ns=$(run_one "$pin" "$tool")
    us[$tool]=$(awk -v a="$ns" -v b="$base" 'BEGIN { printf "%.1f", (a - b) / 1000 }')
  done
  echo "== $pin CPUs, $N hits, loop alone ${base} ns/iter"
  for tool in "${!us[@]}"; do printf '  %-10s %8s us/hit\n' "$tool" "${us[$tool]}"; done
  p=${us[periscope]}
  awk -v p="$p" -v g="${us[gdb]}" 'BEGIN { printf "  gdb dprintf / periscope = %.1fx\n", g / p }'
  [ -n "${us[bpftrace]:-}" ] && awk -v p="$p" -v b="${us[bpftrace]}" 'BEGIN { printf "  periscope / bpftrace   = %.1fx\n", p / b }'
  unset us
done
