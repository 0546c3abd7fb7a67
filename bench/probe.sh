#!/usr/bin/env bash
# A/B probe between full runs: w1 (keep-alive HTTP/1.1, 32 connections) or w2 (a new TLS
# connection per request), one hop or the two-hop chain, alternating the given targets round by round so that drift on the machine
# hits all of them alike. Reuses the newest work directory bench/run.sh left in /tmp
# (certificates, proxy configs, nginx backend) and its way of starting targets (targets.sh),
# so run bench/run.sh once first.
#
#   bench/probe.sh [--chain] [--w2] [--seconds S] [--rounds N] TARGET...
#
# TARGET: `haproxy`, or the path of an eastwest binary (say the bench build and a patched
# one). The load generator is .build-bench/release/eastwest (EASTWEST_LOAD_BIN to change).
# Prints, per round and target: req/s, p99 and the proxies' CPU µs per request. Same pinning
# as bench/run.sh: proxies on core 0, load and backend on core 1.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
chain=0 handshakes=() seconds=6 rounds=3 targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --chain) chain=1 ;;
        --w2) handshakes=(--new-connection-per-request) ;;
        --seconds) seconds=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        -h|--help) sed -n 2,13p "$0"; exit 0 ;;
        *) targets+=("$1") ;;
    esac
    shift
done
[ ${#targets[@]} -gt 0 ] || { echo "bench/probe.sh: name at least one target (haproxy or an eastwest binary)" >&2; exit 2; }
work=$(ls -td /tmp/eastwest-bench.* 2>/dev/null | head -1)
[ -n "$work" ] && [ -f "$work/gw-a.yaml" ] || { echo "bench/probe.sh: no bench work directory in /tmp; run bench/run.sh first" >&2; exit 1; }
load_bin=${EASTWEST_LOAD_BIN:-$here/../.build-bench/release/eastwest}
[ -x "$load_bin" ] || { echo "bench/probe.sh: no load generator at $load_bin (bench/run.sh builds it)" >&2; exit 1; }
proxy_cpu="taskset -c 0" backend=127.0.60.10 gw_bin=$load_bin pids=()
source "$here/targets.sh"
cleanup() {
    for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    [ -f "$work/nginx-backend.pid" ] && kill "$(cat "$work/nginx-backend.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
taskset -c 1 nginx -c "$work/nginx-backend.conf"
client=$work/certs/client

probe() { # target
    local name=$1 target before after
    if [ "$1" = haproxy ]; then target=haproxy-tcp; else target=eastwest; gw_bin=$1; fi
    [ "$chain" = 1 ] && target=${target%-tcp}-chain
    start_target "$target"
    before=$(cpu_of)
    taskset -c 1 "$load_bin" load --target "$(address_of "$target"):15443" --sni echo.bench.svc.cluster.local \
        --cert "$client/cert-chain.pem" --key "$client/key.pem" --ca "$client/root-cert.pem" \
        --connections 32 ${handshakes[@]+"${handshakes[@]}"} --duration "${seconds}s" --json > "$work/probe.json" 2>/dev/null
    after=$(cpu_of)
    stop_target "$target"
    python3 - "$work/probe.json" "$name" "$before" "$after" <<'EOF'
import json, sys
load, name, cpu = json.load(open(sys.argv[1])), sys.argv[2], float(sys.argv[4]) - float(sys.argv[3])
print(f"{name:>48}  {load['requestsPerSecond']:8.0f} req/s  p99 {load['latencyMs']['p99']:.2f} ms  "
      f"CPU µs/req {cpu * 1e6 / load['succeeded']:.2f}")
EOF
}

echo "$([ ${#handshakes[@]} -gt 0 ] && echo w2 || echo w1)$([ "$chain" = 1 ] && echo ", two-hop chain"), ${seconds} s per probe, work directory $work"
for round in $(seq "$rounds"); do
    echo "round $round"
    for target in "${targets[@]}"; do probe "$target"; done
done
