#!/usr/bin/env bash
# Profiles Ferry under one load, one command: builds release, starts the mock (`--fast`, CPU 1)
# and Ferry (one worker, CPU 0) as bench/macro.sh does, drives the chosen load with oha (c=32,
# CPU 1) while `perf stat` counts Ferry's instructions and `perf record` samples it, then prints
# instructions and CPU time per request and the hottest symbols.
# Usage: bench/profile.sh [chat|stream|anthropic|gemini|plain] [seconds, default 10]
# Env: PROFILE_TOP=N symbols to print (default 40); FERRY_BIN=path profiles that binary instead
# of building (an A/B comparison); PROFILE_DATA=path keeps perf.data there (for `perf report`). Everything it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
load=${1:-stream}
secs=${2:-10}
root=$PWD
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }
command -v oha >/dev/null || cargo install oha --locked
[ -n "${FERRY_BIN:-}" ] || cargo build --release -p ferry -p ferry-testkit --bins >/dev/null 2>&1
ferry_bin=$(readlink -f "${FERRY_BIN:-target/release/ferry}")
. bench/lib.sh

mock_port=$(free_port); port=$(free_port); admin_port=$(free_port)
start_mock "$mock_port" 1 --fast
ferry_config "$work/config.yaml" "$port" "$admin_port"
start_ferry "$ferry_bin" 0
wait_port "$mock_port"; wait_port "$port"; wait_port "$admin_port"

put() { # ID URI
  curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:$admin_port/apisix/admin/routes/$1" -X PUT -H "X-API-KEY: bench-key" -d "{
    \"uri\": \"$2\", \"plugins\": {\"ai-proxy\": {\"provider\": \"openai\", \"auth\": {\"header\": {\"Authorization\": \"Bearer token\"}},
      \"keepalive_pool\": 256, \"override\": {\"endpoint\": \"http://127.0.0.1:$mock_port/v1/chat/completions\"}}}}" | grep -q 20 || { echo "route $1 refused" >&2; exit 1; }
}
put chat /v1/chat/completions
put messages /v1/messages
put gemini "/gemini/*"
curl -s -o /dev/null "http://127.0.0.1:$admin_port/apisix/admin/routes/plain" -X PUT -H "X-API-KEY: bench-key" -d "{
  \"uri\": \"/v1/chat/completions\", \"priority\": 10, \"vars\": [[\"http_x_plain\", \"==\", \"1\"]],
  \"upstream\": {\"nodes\": {\"127.0.0.1:$mock_port\": 1}, \"keepalive_pool\": {\"size\": 256}}}"

body=$(bench_body chat)
extra=()
case $load in
  chat) url=/v1/chat/completions ;;
  stream) url=/v1/chat/completions; body=$(bench_body stream) ;;
  plain) url=/v1/chat/completions; extra=(-H "x-plain: 1") ;;
  anthropic) url=/v1/messages; body=$(bench_body anthropic) ;;
  gemini) url="/gemini/v1beta/models/gpt-4o-mini:streamGenerateContent?alt=sse"; body=$(bench_body gemini) ;;
  *) echo "unknown load $load" >&2; exit 1 ;;
esac
drive() { # SECONDS -> requests per second
  taskset -c 1 oha --no-tui --output-format json -z "${1}s" -c 32 -m POST "${extra[@]}" \
    -H "content-type: application/json" -H "authorization: Bearer token" -H "x-mock-chunks: 18" \
    -d "$body" "http://127.0.0.1:$port$url" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(int(d["summary"]["requestsPerSec"]))'
}
drive 2 >/dev/null
t0=$(ticks "$ferry_pid")
perf stat -x, -e instructions -p "$ferry_pid" -o "$work/stat.txt" &
stat_pid=$!
perf record -F 2000 -g -p "$ferry_pid" -o "$work/perf.data" >/dev/null 2>&1 &
rec_pid=$!
sleep 0.5
rps=$(drive "$secs")
kill -INT "$stat_pid" "$rec_pid" 2>/dev/null || true
wait "$stat_pid" "$rec_pid" 2>/dev/null || true
[ -z "${PROFILE_DATA:-}" ] || cp "$work/perf.data" "$PROFILE_DATA"
cpu_ns=$(( ($(ticks "$ferry_pid") - t0) * 10000 * 1000 / (rps * secs) ))
ins=$(awk -F, '/instructions/ { print $1 }' "$work/stat.txt")
per_req="instructions not counted (no PMU counters here)"
case $ins in ''|*[!0-9]*) ;; *) per_req="$(( ins / (rps * secs) )) instructions" ;; esac
echo "load $load, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs): $rps req/s at c=32;" \
  "Ferry $cpu_ns ns CPU per request, $per_req per request."
perf report -i "$work/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' \
  | sed -E 's/ +- +- *$//; s/ +$//' | cut -c1-160 | head -"${PROFILE_TOP:-40}"
