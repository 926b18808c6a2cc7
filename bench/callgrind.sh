#!/usr/bin/env bash
# Instructions per request, one command: Ferry under valgrind's callgrind (instrumentation
# switched on after 50 warm-up requests), N requests of one load (c=4) from oha against the
# project's mock, then the total divided by N and the functions with the most inclusive cost.
# The counts repeat to within a fraction of a percent from run to run, unlike timings on a
# shared VM: this is the measure docs/design.md's steps are recorded in.
# Usage: bench/callgrind.sh [chat|stream|anthropic|gemini] [requests, default 1000]
# Env: FERRY_BIN=path measures that binary instead of building; CALLGRIND_OUT=path keeps the
# profile (for callgrind_annotate). Everything it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
load=${1:-chat}
n=${2:-1000}
command -v valgrind >/dev/null || { apt-get install -y -qq valgrind >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }; }
command -v oha >/dev/null || cargo install oha --locked
[ -n "${FERRY_BIN:-}" ] || cargo build --release -p ferry -p ferry-testkit --bins >/dev/null 2>&1
bin=$(readlink -f "${FERRY_BIN:-target/release/ferry}")
. bench/lib.sh
out=${CALLGRIND_OUT:-$work/callgrind.out}

mock_port=$(free_port); port=$(free_port); admin_port=$(free_port)
FERRY_MOCK_THREADS=1 target/release/ferry-mock --listen "127.0.0.1:$mock_port" --key token --fast 2>/dev/null &
pids+=($!)
ferry_config "$work/config.yaml" "$port" "$admin_port"
(cd "$work" && exec valgrind --tool=callgrind --callgrind-out-file="$out" --instr-atstart=no "$bin" serve --config config.yaml 2>"$work/ferry.log") &
ferry_pid=$!
pids+=($ferry_pid)
wait_port "$mock_port"; wait_port "$port"; wait_port "$admin_port"
for r in "chat /v1/chat/completions" "messages /v1/messages" "gemini /gemini/*"; do
  set -- $r
  curl -s -o /dev/null "http://127.0.0.1:$admin_port/apisix/admin/routes/$1" -X PUT -H "X-API-KEY: bench-key" -d "{
    \"uri\": \"$2\", \"plugins\": {\"ai-proxy\": {\"provider\": \"openai\", \"auth\": {\"header\": {\"Authorization\": \"Bearer token\"}},
      \"keepalive_pool\": 256, \"override\": {\"endpoint\": \"http://127.0.0.1:$mock_port/v1/chat/completions\"}}}}"
done
case $load in
  chat) url=/v1/chat/completions ;;
  stream) url=/v1/chat/completions ;;
  anthropic) url=/v1/messages ;;
  gemini) url="/gemini/v1beta/models/gpt-4o-mini:streamGenerateContent?alt=sse" ;;
  *) echo "unknown load $load" >&2; exit 1 ;;
esac
body=$(bench_body "$load")
drive() {
  oha --no-tui -n "$1" -c 4 -m POST -H "content-type: application/json" -H "authorization: Bearer token" \
    -H "x-mock-chunks: 18" -d "$body" "http://127.0.0.1:$port$url" | grep -q 'Success rate:.*100.00%' \
    || { echo "requests failed" >&2; exit 1; }
}
drive 50
callgrind_control -i on "$ferry_pid" >/dev/null 2>&1 || callgrind_control -i on >/dev/null
drive "$n"
kill -INT "$ferry_pid"
for _ in $(seq 100); do kill -0 "$ferry_pid" 2>/dev/null || break; sleep 0.1; done
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "load $load: $((total / n)) instructions per request ($n requests, $(valgrind --version))"
callgrind_annotate --inclusive=yes "$out" 2>/dev/null | grep -E 'ferry_(protocol|plugins|core|gateway|config)' \
  | grep -v '{{closure}}' | head -"${CALLGRIND_TOP:-25}" | cut -c1-180
