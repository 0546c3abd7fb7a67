#!/usr/bin/env bash
# A/B probe between full runs: w1 (keep-alive HTTP/1.1, 32 connections), one hop or the
# two-hop chain, alternating the given targets round by round so that drift on the machine
# hits all of them alike. Reuses the newest work directory bench/run.sh left in /tmp
# (certificates, proxy configs, nginx backend), so run bench/run.sh once first.
#
#   bench/probe.sh [--chain] [--seconds S] [--rounds N] TARGET...
#
# TARGET: `haproxy`, or the path of an eastwest binary (say the bench build and a patched
# one). The load generator is .build-bench/release/eastwest (EASTWEST_LOAD_BIN to change).
# Prints, per round and target: req/s, p99, and the proxies' CPU µs per request (A and B
# for the chain). Same pinning as bench/run.sh: proxies on core 0, load and backend on core 1.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
chain=0 seconds=6 rounds=3 targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --chain) chain=1 ;;
        --seconds) seconds=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        -h|--help) sed -n 2,12p "$0"; exit 0 ;;
        *) targets+=("$1") ;;
    esac
    shift
done
[ ${#targets[@]} -gt 0 ] || { echo "bench/probe.sh: name at least one target (haproxy or an eastwest binary)" >&2; exit 2; }
work=$(ls -td /tmp/eastwest-bench.* 2>/dev/null | head -1)
[ -n "$work" ] && [ -f "$work/gw-a.yaml" ] || { echo "bench/probe.sh: no bench work directory in /tmp; run bench/run.sh first" >&2; exit 1; }
load_bin=${EASTWEST_LOAD_BIN:-$here/../.build-bench/release/eastwest}
[ -x "$load_bin" ] || { echo "bench/probe.sh: no load generator at $load_bin (bench/run.sh builds it)" >&2; exit 1; }
client=$work/certs/client

pids=()
cleanup() {
    for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    [ -f "$work/nginx-backend.pid" ] && kill "$(cat "$work/nginx-backend.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/$1/15443") 2>/dev/null && return; sleep 0.1; done; echo "bench/probe.sh: nothing listens on $1:15443" >&2; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

probe() { # target
    local target=$1 entry a b=""
    taskset -c 1 nginx -c "$work/nginx-backend.conf"
    if [ "$target" = haproxy ]; then
        if [ "$chain" = 1 ]; then
            taskset -c 0 haproxy -db -f "$work/haproxy-b.cfg" 2>/dev/null & b=$!
            taskset -c 0 haproxy -db -f "$work/haproxy-a-chain.cfg" 2>/dev/null & a=$!
            wait_port 127.0.64.1
        else
            taskset -c 0 haproxy -db -f "$work/haproxy.cfg" 2>/dev/null & a=$!
        fi
        entry=127.0.63.1
    else
        if [ "$chain" = 1 ]; then
            taskset -c 0 "$target" gateway --config "$work/gw-b.yaml" --concurrency 1 --log-level warning 2>/dev/null & b=$!
            taskset -c 0 "$target" gateway --config "$work/gw-a-chain.yaml" --concurrency 1 --log-level warning 2>/dev/null & a=$!
            wait_port 127.0.62.1
        else
            taskset -c 0 "$target" gateway --config "$work/gw-a.yaml" --concurrency 1 --log-level warning 2>/dev/null & a=$!
        fi
        entry=127.0.61.1
    fi
    pids=($a $b)
    wait_port $entry
    local a0 b0=0 a1 b1=0
    a0=$(cpu_ticks $a); [ -n "$b" ] && b0=$(cpu_ticks $b)
    taskset -c 1 "$load_bin" load --target $entry:15443 --sni echo.bench.svc.cluster.local \
        --cert "$client/cert-chain.pem" --key "$client/key.pem" --ca "$client/root-cert.pem" \
        --connections 32 --duration "${seconds}s" --json > "$work/probe.json" 2>/dev/null
    a1=$(cpu_ticks $a); [ -n "$b" ] && b1=$(cpu_ticks $b)
    kill $a $b 2>/dev/null; wait $a $b 2>/dev/null || true
    kill "$(cat "$work/nginx-backend.pid")" 2>/dev/null || true
    sleep 0.5
    python3 - "$work/probe.json" "$target" $((a1 - a0)) $((b1 - b0)) "$chain" <<'EOF'
import json, sys
load, target, a, b, chain = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
n = load["succeeded"]
cpu = f"CPU µs/req {(a + b) * 1e4 / n:.2f}" + (f" (A {a * 1e4 / n:.2f}, B {b * 1e4 / n:.2f})" if chain else "")
print(f"{target:>48}  {load['requestsPerSecond']:8.0f} req/s  p99 {load['latencyMs']['p99']:.2f} ms  {cpu}")
EOF
}

echo "w1$([ "$chain" = 1 ] && echo ", two-hop chain"), ${seconds} s per probe, work directory $work"
for round in $(seq "$rounds"); do
    echo "round $round"
    for target in "${targets[@]}"; do probe "$target"; done
done
