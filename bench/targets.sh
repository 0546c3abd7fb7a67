# Starting, stopping and measuring one bench target (a proxy, a chained pair, or direct),
# sourced by run.sh and probe.sh. Expects: $work (the run's directory, with certificates and
# configs), $proxy_cpu (a taskset prefix, or empty), $gw_bin (the eastwest binary to run as
# a gateway), $backend (the backend's address) and the array pids (everything to kill on exit).
target_pids=()
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1:$2" >&2; return 1; }
start_target() {
    target_pids=()
    case "$1" in
        direct) ;;
        eastwest|eastwest-http|eastwest-http-token)
            $proxy_cpu "$gw_bin" gateway --config "$work/gw-a.yaml" --concurrency 1 --log-level warning 2>>"$work/gw.log" &
            target_pids+=($!); wait_port 127.0.61.1 15443 ;;
        eastwest-http-vs50)
            $proxy_cpu "$gw_bin" gateway --config "$work/gw-a-vs50.yaml" --concurrency 1 --log-level warning 2>>"$work/gw.log" &
            target_pids+=($!); wait_port 127.0.61.1 15443 ;;
        eastwest-http-authz)
            $proxy_cpu "$gw_bin" gateway --config "$work/gw-a-authz.yaml" --concurrency 1 --log-level warning 2>>"$work/gw.log" &
            target_pids+=($!); wait_port 127.0.61.1 15443 ;;
        eastwest-http-resilience)
            $proxy_cpu "$gw_bin" gateway --config "$work/gw-a-resilience.yaml" --concurrency 1 --log-level warning 2>>"$work/gw.log" &
            target_pids+=($!); wait_port 127.0.61.1 15443 ;;
        eastwest-chain|eastwest-http-chain)
            $proxy_cpu "$gw_bin" gateway --config "$work/gw-b.yaml" --concurrency 1 --log-level warning 2>>"$work/gw.log" &
            target_pids+=($!)
            $proxy_cpu "$gw_bin" gateway --config "$work/gw-a-chain.yaml" --concurrency 1 --log-level warning 2>>"$work/gw.log" &
            target_pids+=($!); wait_port 127.0.61.1 15443; wait_port 127.0.62.1 15443 ;;
        haproxy-tcp|haproxy-http)
            $proxy_cpu haproxy -db -f "$work/haproxy.cfg" 2>>"$work/haproxy.log" &
            target_pids+=($!); wait_port 127.0.63.1 15443 ;;
        haproxy-chain|haproxy-http-chain)
            $proxy_cpu haproxy -db -f "$work/haproxy-b.cfg" 2>>"$work/haproxy.log" &
            target_pids+=($!)
            $proxy_cpu haproxy -db -f "$work/haproxy-a-chain.cfg" 2>>"$work/haproxy.log" &
            target_pids+=($!); wait_port 127.0.63.1 15443; wait_port 127.0.64.1 15443 ;;
        nginx-stream|nginx-http)
            $proxy_cpu nginx -c "$work/nginx-proxy.conf"
            sleep 0.3; target_pids+=($(pgrep -P "$(cat "$work/nginx-proxy.pid")") "$(cat "$work/nginx-proxy.pid")"); wait_port 127.0.65.1 15443 ;;
    esac
    pids+=("${target_pids[@]:-}")
}
stop_target() {
    case "$1" in
        nginx-stream|nginx-http) kill "$(cat "$work/nginx-proxy.pid")" 2>/dev/null || true; sleep 0.5 ;;
        *) for pid in "${target_pids[@]:-}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done ;;
    esac
    target_pids=()
}
address_of() {
    case "$1" in
        direct) echo "$backend" ;; eastwest*) echo 127.0.61.1 ;;
        haproxy-*) echo 127.0.63.1 ;; nginx-*) echo 127.0.65.1 ;;
    esac
}
port_of() { case "$1" in haproxy-http*|nginx-http) echo 15444 ;; direct) echo "$2" ;; *) echo 15443 ;; esac; }
# CPU seconds (user + system) the target's processes used so far.
cpu_of() { local total=0; for pid in "${target_pids[@]:-}"; do
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
    python3 -c "print($total / $(getconf CLK_TCK))"; }
rss_kib() { local total=0; for pid in "${target_pids[@]:-}"; do
    [ -n "$pid" ] && [ -r "/proc/$pid/status" ] && total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status"))); done; echo "$total"; }
