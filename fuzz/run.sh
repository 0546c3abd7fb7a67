#!/usr/bin/env bash
# fuzz/run.sh TARGET [SECONDS] — runs one libFuzzer target (client-hello, gossip, config,
# admin-json, jwt, ext-authz-grpc) for SECONDS (default 60) with AddressSanitizer.
#
# Seeds: fuzz/corpus/TARGET (committed, read-only here). New inputs the fuzzer finds go to
# fuzz/.work/TARGET (a cache, not committed). A crash lands in fuzz/crashes/TARGET/; commit it
# there after fixing the bug: FuzzCorpusTests replays every file in fuzz/corpus and fuzz/crashes
# on every test run.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/run.sh client-hello|gossip|config|admin-json|jwt|ext-authz-grpc [SECONDS]}
seconds=${2:-60}
case $target in
  client-hello) max_len=17000 ;;
  gossip) max_len=65536 ;;
  config) max_len=16384 ;;
  admin-json) max_len=8192 ;;
  jwt) max_len=8192 ;;
  ext-authz-grpc) max_len=8192 ;;
  *) echo "unknown target '$target'" >&2; exit 2 ;;
esac
# Every Swift module in the graph is instrumented, so the fuzzer can steer into NIO's and our
# code alike; C libraries (BoringSSL, libyaml) are not.
swift build --scratch-path .build-fuzz --product EastWestFuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld 2>&1 | grep -v '^\[' || true
binary=.build-fuzz/debug/EastWestFuzz
test -x "$binary" || { echo "build failed" >&2; exit 1; }
mkdir -p "fuzz/.work/$target" "fuzz/crashes/$target"
EASTWEST_FUZZ_TARGET="$target" ASAN_OPTIONS=detect_leaks=0:handle_abort=1:quarantine_size_mb=64 "$binary" "$target" "fuzz/.work/$target" "fuzz/corpus/$target" \
  -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=8192 -timeout=10 \
  -artifact_prefix="fuzz/crashes/$target/" -print_final_stats=1
