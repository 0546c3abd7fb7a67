#!/usr/bin/env bash
# Side-by-side benchmark: a direct connection, HAProxy, nginx and EastWest on the same machine,
# certificates, backend and load, in one run. Prints absolute numbers and ratios and writes
# bench/results/<date>.md.
#
#   bench/run.sh            full run (every target and workload, 3 repeats of 10 s; ~25 min)
#   bench/run.sh --quick    2-minute subset (w1, w2 and the chains, 3 repeats of 3 s)
#
# Workloads: w1-w5 at L4 (EastWest forwards bytes), `chain` (the two-hop pairs), `l7` (HTTP
# terminated by every proxy: l1 keep-alive HTTP/1.1, l2 a new connection per request, l4
# HTTP/2; EastWest with a VirtualService of 1 and of 50 rules; the two-hop HTTP chain).
# Options: --repeats N, --seconds S, --only w1,w2,...,chain,l7 (workloads), --targets eastwest,...
# (targets), --out FILE, --no-install.
# Cores: with two or more, proxies run on core 0 and the load generator and the backend on
# core 1 (taskset), so a proxy's CPU time is its own and it cannot steal the generator's core.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
quick=0 repeats=3 seconds=10 only="" out="" install=1 target_filter=
arguments="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --repeats) repeats=$2; shift ;;
        --seconds) seconds=$2; shift ;;
        --only) only=$2; shift ;;
        --targets) target_filter=$2; shift ;;
        --out) out=$2; shift ;;
        --no-install) install=0 ;;
        -h|--help) sed -n 2,12p "$0"; exit 0 ;;
        *) echo "bench/run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then seconds=3; [ -z "$only" ] && only="w1,w2,chain"; fi
idle_conns=10000 idle_for=30s
[ "$quick" = 1 ] && { idle_conns=2000; idle_for=5s; }

need() { command -v "$1" >/dev/null 2>&1; }
if [ "$install" = 1 ] && ! { need haproxy && need nginx && need h2load && need wrk && need taskset && [ -f /usr/lib/nginx/modules/ngx_stream_module.so ]; }; then
    echo "installing haproxy, nginx, h2load, wrk from Debian…" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nginx-light libnginx-mod-stream nghttp2-client wrk util-linux procps >/dev/null
fi
for tool in haproxy nginx h2load wrk taskset python3; do need "$tool" || { echo "bench/run.sh: $tool is missing" >&2; exit 1; }; done

# Release build without the runtime exclusivity checks, in every module (SwiftNIO's and
# swift-nio-ssl's included): the production build the README recommends. It measured 7 % less
# CPU per request and 11 % more two-hop throughput than a plain `swift build -c release`
# (bench/results/optimisations.md). Its own scratch path, so the default .build stays as is.
echo "building eastwest (release, -enforce-exclusivity=unchecked, .build-bench)…" >&2
(cd "$root" && swift build -c release --scratch-path .build-bench -Xswiftc -enforce-exclusivity=unchecked >/dev/null)
ew="$root/.build-bench/release/eastwest"
# The gateway under test; the load generator stays $ew. Set EASTWEST_GATEWAY_BIN to compare
# builds (compiler flags, say) under the same load.
gw_bin=${EASTWEST_GATEWAY_BIN:-$ew}

work=$(mktemp -d /tmp/eastwest-bench.XXXXXX)
results="$work/results.jsonl"
: > "$results"
pids=()
cleanup() {
    for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    [ -f "$work/nginx-backend.pid" ] && kill "$(cat "$work/nginx-backend.pid")" 2>/dev/null || true
    [ -f "$work/nginx-proxy.pid" ] && kill "$(cat "$work/nginx-proxy.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# A proxied connection costs a proxy two descriptors; where the limit cannot be raised (a
# container without CAP_SYS_RESOURCE), w5 holds what fits and says so.
fd_limit=$(ulimit -n)
max_proxied=$(( (fd_limit - 500) / 2 ))

[ "$idle_conns" -gt "$max_proxied" ] && { echo "w5: open-files limit $fd_limit fits $max_proxied proxied connections, not $idle_conns; holding $max_proxied" >&2; idle_conns=$max_proxied; }
chmod 755 "$work"   # nginx workers (www-data) read the backend's files from here
cores=$(nproc)
if [ "$cores" -ge 2 ]; then proxy_cpu="taskset -c 0" load_cpu="taskset -c 1"; pinning="proxies on core 0; load generator and backend on core 1"
else proxy_cpu="" load_cpu=""; pinning="one core: no pinning"; fi

# --- certificates: one mesh root, clusters a and b, gateway and client identities ---------------
host=echo.bench.svc.cluster.local
host_h2=echo-h2.bench.svc.cluster.local
# The same backend as an Istio `http` service: EastWest's HTTP connection manager serves it.
host_http=web.bench.svc.cluster.local
"$ew" ca init --dir "$work/ca" >/dev/null
for c in a b; do "$ew" ca cluster --dir "$work/ca" --cluster "$c" >/dev/null; done
for c in a b; do
    # Each gateway's identity names its cluster (eastwest-gateway-<cluster>): a dialled peer
    # gateway must present its own cluster's.
    "$ew" ca gateway --dir "$work/ca" --cluster "$c" --dns "$host" --dns "$host_h2" --dns "$host_http" --out "$work/certs/gw-$c" >/dev/null
    cat "$work/certs/gw-$c/cert-chain.pem" "$work/certs/gw-$c/key.pem" > "$work/certs/gw-$c/haproxy.pem"
done
"$ew" ca workload --dir "$work/ca" --cluster a --spiffe spiffe://cluster.local/ns/bench/sa/load --out "$work/certs/client" >/dev/null
client="$work/certs/client"
tls_flags=(--cert "$client/cert-chain.pem" --key "$client/key.pem" --ca "$client/root-cert.pem")

# --- the backend: nginx, HTTP/1.1 on 8080 and h2c on 8082 ------------------------------------------
mkdir -p "$work/www"
printf 'hello from the backend\n' > "$work/www/index.html"
head -c 1048576 /dev/urandom > "$work/www/1m"
backend=127.0.60.10
# One worker, as many connections as the descriptor limit allows; NAME names pid and log.
nginx_main() { # NAME
    printf 'worker_processes 1;\npid %s/%s.pid;\nerror_log %s/%s.error.log warn;\n' "$work" "$1" "$work" "$1"
    printf 'worker_rlimit_nofile %s;\nevents { worker_connections %s; }\n' "$fd_limit" "$fd_limit"
}
{ nginx_main nginx-backend; cat <<EOF
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server { listen $backend:8080 backlog=4096; root $work/www; }
  server { listen $backend:8082 http2 backlog=4096; root $work/www; http2_max_concurrent_streams 256; }
}
EOF
} > "$work/nginx-backend.conf"
$load_cpu nginx -c "$work/nginx-backend.conf"

# --- EastWest: gateway A (cluster a) and B (cluster b); A reaches echo only through B ------------
gateway_config() { # name cluster address local(yes|no) [policy file]
    local name=$1 cluster=$2 address=$3 local_service=$4 policy=${5:-$work/vs1.yaml}
    cat <<EOF
name: $name
cluster: $cluster
locality: bench/$cluster
listen: $address:15443
admin: $address:15000
tls: {certificateChain: $work/certs/gw-$cluster/cert-chain.pem, privateKey: $work/certs/gw-$cluster/key.pem, rootCertificate: $work/certs/gw-$cluster/root-cert.pem}
policies: [$policy]
EOF
    if [ "$local_service" = yes ]; then cat <<EOF
services:
- {host: $host, port: 8080, endpoints: [{address: $backend:8080, locality: bench/$cluster}]}
- {host: $host_h2, port: 8082, endpoints: [{address: $backend:8082, locality: bench/$cluster}]}
- {host: $host_http, port: 8080, protocol: http, endpoints: [{address: $backend:8080, locality: bench/$cluster}]}
EOF
    else cat <<EOF
remoteClusters:
- name: b
  gateways: [{name: gw-b, address: 127.0.62.1:15443}]
  services:
  - {host: $host, port: 8080, endpoints: [{address: $backend:8080, locality: bench/b}]}
  - {host: $host_h2, port: 8082, endpoints: [{address: $backend:8082, locality: bench/b}]}
  - {host: $host_http, port: 8080, protocol: http, endpoints: [{address: $backend:8080, locality: bench/b}]}
EOF
    fi
}
# The HTTP service's VirtualService: one catch-all rule, or 49 rules that do not match (prefix,
# header and regex matches in turn) before it, for the cost of matching.
virtual_service() { # rules
    printf 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: bench}\nspec:\n  hosts: [%s]\n  http:\n' "$host_http"
    for i in $(seq 1 $(($1 - 1))); do
        case $((i % 3)) in
            0) printf '  - match: [{uri: {prefix: /api/v%s/}}]\n' "$i" ;;
            1) printf '  - match: [{headers: {x-tenant: {exact: tenant-%s}}}]\n' "$i" ;;
            2) printf '  - match: [{uri: {regex: "/items/%s/[0-9]+"}}]\n' "$i" ;;
        esac
        printf '    route: [{destination: {host: %s}}]\n' "$host_http"
    done
    printf '  - route: [{destination: {host: %s}}]\n' "$host_http"
}
virtual_service 1 > "$work/vs1.yaml"
virtual_service 50 > "$work/vs50.yaml"
# One rule with the design document's retries, a route timeout and faults that never fire
# (0 %): what a resilience policy costs a request that needs none of it.
{ virtual_service 1 | sed '$d'
  printf '  - timeout: 30s\n    retries: {attempts: 3, perTryTimeout: 10s, retryOn: "5xx,reset,connect-failure,refused-stream", retryRemoteLocalities: true}\n'
  printf '    fault: {delay: {fixedDelay: 5s, percentage: {value: 0}}, abort: {httpStatus: 503, percentage: {value: 0}}}\n'
  printf '    route: [{destination: {host: %s}}]\n' "$host_http"; } > "$work/vs-resilience.yaml"
# A 20-rule AuthorizationPolicy (19 that do not match, then one that needs the token's
# principal) and a RequestAuthentication whose RS256 token every request carries: what security
# policy costs a request it lets through (issue 18: ≤ 1.15× the CPU/req of the same route without).
openssl genrsa -out "$work/jwt-key.pem" 2048 2>/dev/null
python3 - "$work" <<'EOF'
import base64, json, subprocess, sys
work = sys.argv[1]
b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
modulus = subprocess.run(["openssl", "rsa", "-in", f"{work}/jwt-key.pem", "-noout", "-modulus"], capture_output=True, text=True).stdout.split("=")[1].strip()
jwks = json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "kid": "bench", "n": b64(bytes.fromhex(modulus)), "e": "AQAB"}]})
signing = b64(json.dumps({"alg": "RS256", "kid": "bench", "typ": "JWT"}).encode()) + "." + b64(json.dumps(
    {"iss": "https://issuer.bench", "sub": "load", "aud": "web", "exp": 4102444800}).encode())
signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{work}/jwt-key.pem"], input=signing.encode(), capture_output=True).stdout
open(f"{work}/jwt-token", "w").write(signing + "." + b64(signature))
rules = "".join(f"  - to: [{{operation: {{paths: [/admin/{i}/*], methods: [DELETE]}}}}]\n" if i % 2 else
                f"  - from: [{{source: {{principals: [cluster.local/ns/other/sa/s{i}]}}}}]\n" for i in range(19))
open(f"{work}/authz.yaml", "w").write(f"""---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: bench-jwt, namespace: bench}}
spec:
  jwtRules:
  - issuer: https://issuer.bench
    audiences: [web]
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: bench-allow, namespace: bench}}
spec:
  action: ALLOW
  rules:
{rules}  - from: [{{source: {{requestPrincipals: [https://issuer.bench/load]}}}}]
    to: [{{operation: {{methods: [GET], paths: ["/*"]}}}}]
""")
EOF
cat "$work/vs1.yaml" "$work/authz.yaml" > "$work/vs-authz.yaml"
gateway_config gw-a a 127.0.61.1 yes > "$work/gw-a.yaml"        # single hop: A serves echo itself
gateway_config gw-a a 127.0.61.1 yes "$work/vs50.yaml" > "$work/gw-a-vs50.yaml"
gateway_config gw-a a 127.0.61.1 yes "$work/vs-resilience.yaml" > "$work/gw-a-resilience.yaml"
gateway_config gw-a a 127.0.61.1 yes "$work/vs-authz.yaml" > "$work/gw-a-authz.yaml"
gateway_config gw-a a 127.0.61.1 no > "$work/gw-a-chain.yaml"   # chain: A → B → backend
gateway_config gw-b b 127.0.62.1 yes > "$work/gw-b.yaml"

# --- HAProxy: mode tcp and mode http; a chained pair the same way -------------------------------
haproxy_config() { # address cert upstream(backend|chain)
    local address=$1 cert=$2 upstream=$3
    local ssl="ssl crt $cert ca-file $work/certs/gw-a/root-cert.pem verify required"
    cat <<EOF
global
  nbthread 1
  maxconn $max_proxied
  tune.ssl.default-dh-param 2048
defaults
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend tcp_in
  mode tcp
  bind $address:15443 $ssl
  use_backend h2_tcp if { ssl_fc_sni -i $host_h2 }
  default_backend echo_tcp
frontend http_in
  mode http
  bind $address:15444 $ssl alpn h2,http/1.1
  default_backend echo_http
EOF
    if [ "$upstream" = chain ]; then
        local hop="ssl crt $work/certs/gw-a/haproxy.pem ca-file $work/certs/gw-a/root-cert.pem verify required"
        cat <<EOF
backend echo_tcp
  mode tcp
  server b 127.0.64.1:15443 $hop sni str($host)
backend h2_tcp
  mode tcp
  server b 127.0.64.1:15443 $hop sni str($host_h2)
backend echo_http
  mode http
  http-reuse always
  server b 127.0.64.1:15444 $hop sni str($host) alpn h2
EOF
    else
        cat <<EOF
backend echo_tcp
  mode tcp
  server echo $backend:8080
backend h2_tcp
  mode tcp
  server echo $backend:8082
backend echo_http
  mode http
  http-reuse always
  server echo $backend:8080
EOF
    fi
}
haproxy_config 127.0.63.1 "$work/certs/gw-a/haproxy.pem" backend > "$work/haproxy.cfg"
haproxy_config 127.0.63.1 "$work/certs/gw-a/haproxy.pem" chain > "$work/haproxy-a-chain.cfg"
haproxy_config 127.0.64.1 "$work/certs/gw-b/haproxy.pem" backend > "$work/haproxy-b.cfg"

# --- nginx: stream (TLS terminated, client certificate required) and http ----------------------
{ echo "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"; nginx_main nginx-proxy; cat <<EOF
stream {
  map \$ssl_server_name \$upstream { $host_h2 $backend:8082; default $backend:8080; }
  server {
    listen 127.0.65.1:15443 ssl backlog=4096;
    ssl_certificate $work/certs/gw-a/cert-chain.pem;
    ssl_certificate_key $work/certs/gw-a/key.pem;
    ssl_client_certificate $work/certs/gw-a/root-cert.pem;
    ssl_verify_client on;
    ssl_verify_depth 3;
    proxy_pass \$upstream;
  }
}
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream echo { server $backend:8080; keepalive 64; }
  server {
    listen 127.0.65.1:15444 ssl http2 backlog=4096;
    ssl_certificate $work/certs/gw-a/cert-chain.pem;
    ssl_certificate_key $work/certs/gw-a/key.pem;
    ssl_client_certificate $work/certs/gw-a/root-cert.pem;
    ssl_verify_client on;
    ssl_verify_depth 3;
    location / { proxy_pass http://echo; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
} > "$work/nginx-proxy.conf"

# --- running targets ----------------------------------------------------------------------------
source "$here/targets.sh"

# One cell: workload on target; appends a JSON line with the generator's summary and the
# target's CPU seconds (and memory for w5).
run_cell() { # target workload repeat
    local target=$1 workload=$2 repeat=$3 addr port args=()
    addr=$(address_of "$target")
    case "$workload" in
        w1|l1) port=$(port_of "$target" 8080); args=(--connections 32 --duration "${seconds}s") ;;
        l2) port=$(port_of "$target" 8080); args=(--connections 32 --new-connection-per-request --duration "${seconds}s") ;;
        l4) port=$(port_of "$target" 8080); args=(--http2 --connections 8 --streams 100 --duration "${seconds}s") ;;
        w2) port=$(port_of "$target" 8080); args=(--connections 32 --new-connection-per-request --duration "${seconds}s") ;;
        w3) port=$(port_of "$target" 8080); args=(--connections 8 --path /1m --duration "${seconds}s") ;;
        w4) port=$(port_of "$target" 8082); args=(--http2 --connections 8 --streams 100 --duration "${seconds}s") ;;
        w5) port=$(port_of "$target" 8080); args=(--idle-connections "$idle_conns" --idle-for "$idle_for" --timeout 30s) ;;
    esac
    local sni=$host
    [ "$workload" = w4 ] && sni=$host_h2
    [[ "$target" == eastwest-http* ]] && sni=$host_http
    local flags=(--target "$addr:$port" --sni "$sni" "${args[@]}" --json)
    # The security row's baseline (eastwest-http-token: the plain route) carries the same token,
    # so the row prices the policy and the JWT check, not parsing and decrypting a longer request.
    case "$target" in eastwest-http-authz|eastwest-http-token) flags+=(--header "Authorization: Bearer $(cat "$work/jwt-token")") ;; esac
    [ "$target" != direct ] && flags+=("${tls_flags[@]}")
    local before rss_base=0 rss_peak=0 summary
    before=$(cpu_of)
    if [ "$workload" = w5 ]; then
        rss_base=$(rss_kib)
        $load_cpu "$ew" load "${flags[@]}" > "$work/cell.json" 2>>"$work/load.log" &
        local gen=$!
        while kill -0 "$gen" 2>/dev/null; do r=$(rss_kib); [ "$r" -gt "$rss_peak" ] && rss_peak=$r; sleep 0.5; done
        wait "$gen" || true
    else
        $load_cpu "$ew" load "${flags[@]}" > "$work/cell.json" 2>>"$work/load.log" || true
    fi
    local cpu
    cpu=$(python3 -c "print($(cpu_of) - $before)")
    python3 - "$work/cell.json" "$target" "$workload" "$repeat" "$cpu" "$rss_base" "$rss_peak" "$idle_conns" "${rotated:-0}" >> "$results" <<'EOF'
import json, sys
path, target, workload, repeat, cpu, base, peak, idle, rotated = sys.argv[1:]
try:
    summary = json.load(open(path))
except Exception:
    summary = {"requestsPerSecond": 0, "bytesPerSecond": 0, "succeeded": 0, "sent": 0, "failed": {"generator": 1}, "latencyMs": {}}
summary.update(target=target, workload=workload, repeat=int(repeat), cpuSeconds=float(cpu),
               rssBaseKiB=int(base), rssPeakKiB=int(peak), idleConnections=int(idle))
if rotated == "1":
    summary["rotated"] = True   # this repeat ran in turn with the other cost rows' (bench/report.py pairs them)
print(json.dumps(summary))
EOF
    python3 -c "
import json,sys; s=json.loads(open('$results').read().splitlines()[-1])
print(f\"  {s['target']:<15} {s['workload']}  #{s['repeat']}  {s['requestsPerSecond']:>10.0f} req/s  {s['bytesPerSecond']/1e6:>8.1f} MB/s  p99 {s['latencyMs'].get('p99', 0):.3f} ms  cpu {s['cpuSeconds']:.2f} s  errors {sum(s['failed'].values())}\")" >&2
}

wants() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
runs_target() { [ -z "$target_filter" ] || [[ ",$target_filter," == *",$1,"* ]]; }
targets=(direct eastwest haproxy-tcp haproxy-http nginx-stream nginx-http)
for target in "${targets[@]}"; do
    runs_target "$target" || continue
    start_target "$target"
    for workload in w1 w2 w3 w4 w5; do
        wants "$workload" || continue
        [ "$target" = direct ] && [ "$workload" = w5 ] && continue
        [ "$target" = direct ] && [ "$workload" = w2 ] && continue   # no TLS: nothing to hand-shake
        reps=$repeats; [ "$workload" = w5 ] && reps=1
        for r in $(seq 1 "$reps"); do run_cell "$target" "$workload" "$r"; done
    done
    stop_target "$target"
done
if wants chain; then
    for target in eastwest-chain haproxy-chain; do
        runs_target "$target" || continue
        start_target "$target"
        for workload in w1 w2 w4; do
            { [ "$quick" = 1 ] && [ "$workload" = w4 ]; } && continue
            for r in $(seq 1 "$repeats"); do run_cell "$target" "$workload" "$r"; done
        done
        stop_target "$target"
    done
fi

# HTTP terminated by every proxy: EastWest's connection manager (a VirtualService of one rule, of
# 50, and of one rule with retries, a timeout and faults that do not fire), HAProxy mode http and nginx http; the two-hop HTTP chains (EastWest A keeps a pooled
# HTTP/2 connection to B; HAProxy A `http-reuse always` over h2 to B).
if wants l7; then
    # The cost rows (one rule against 50 rules, resilience, security) are ratios of l1 cells a few
    # per cent apart, while this machine drifts by tens of per cent over minutes: their l1 cells
    # take turns, one repeat of each per round (a gateway started for each), so drift falls on
    # every target alike instead of on whichever ran last. Each round starts one target further
    # on, so no target always runs first or right after the same neighbour.
    rotating=()
    for target in eastwest-http eastwest-http-vs50 eastwest-http-resilience eastwest-http-token eastwest-http-authz; do
        runs_target "$target" && rotating+=("$target")
    done
    if [ "${#rotating[@]}" -gt 1 ]; then
        for r in $(seq 1 "$repeats"); do
            for i in "${!rotating[@]}"; do
                target=${rotating[$(( (i + r - 1) % ${#rotating[@]} ))]}
                start_target "$target"; rotated=1 run_cell "$target" l1 "$r"; stop_target "$target"
            done
        done
    fi
    for target in eastwest-http eastwest-http-vs50 eastwest-http-resilience eastwest-http-token eastwest-http-authz haproxy-http nginx-http eastwest-http-chain haproxy-http-chain; do
        runs_target "$target" || continue
        # The cost rows have l1 cells only: done in the rotation above.
        [ "${#rotating[@]}" -gt 1 ] && [[ " ${rotating[*]} " == *" $target "* ]] && [ "$target" != eastwest-http ] && continue
        start_target "$target"
        for workload in l1 l2 l4; do
            case "$target:$workload" in eastwest-http-vs50:l2|eastwest-http-vs50:l4|eastwest-http-resilience:l2|eastwest-http-resilience:l4|eastwest-http-authz:l2|eastwest-http-authz:l4|eastwest-http-token:l2|eastwest-http-token:l4|*-chain:l4) continue ;; esac
            [ "${#rotating[@]}" -gt 1 ] && [ "$workload" = l1 ] && [[ " ${rotating[*]} " == *" $target "* ]] && continue
            for r in $(seq 1 "$repeats"); do run_cell "$target" "$workload" "$r"; done
        done
        stop_target "$target"
    done
fi

# The generator's own ceiling against the plain backend, next to wrk and h2load.
generator_line=""
if wants w1 || wants w4; then
    wrk_rps=$( ($load_cpu wrk -t1 -c32 -d"${seconds}s" "http://$backend:8080/" || true) | awk '/Requests\/sec/ {print $2}')
    h2_rps=$( ($load_cpu h2load -c8 -m100 -D"$seconds" "http://$backend:8082/" 2>/dev/null || true) | awk '/^finished in/ {print $4}')
    generator_line="wrk=$wrk_rps h2load=$h2_rps"
fi

# (`|| true`: under pipefail, `head -1` closing a pipe early must not end the run here.)
versions="eastwest $(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo '?'); $( (haproxy -v 2>&1 || true) | head -1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3); $( (h2load --version 2>&1 || true) | head -1); $( (swift --version 2>&1 || true) | head -1)"
machine="$(nproc) cores, $( (grep -m1 'model name' /proc/cpuinfo || true) | cut -d: -f2 | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
command="bench/run.sh${arguments:+ $arguments}"
mkdir -p "$here/results"
suffix=""
[ "$quick" = 1 ] && suffix="-quick"
[ -n "$out" ] || out="$here/results/$(date +%F)$suffix.md"
python3 "$here/report.py" "$results" --machine "$machine" --versions "$versions" --pinning "$pinning" \
    --command "$command" --seconds "$seconds" --repeats "$repeats" --generator "$generator_line" > "$out"
cat "$out"
echo "written to $out (raw results: $results)" >&2
