#!/usr/bin/env bash
# Macro benchmark, one command: builds release, starts the project's mock provider (pre-rendered
# answers, `ferry-mock --fast`), Ferry (ai-proxy on, usage and TTFT recorded, access log on) and
# a plain nginx `proxy_pass` to the same mock, and drives each with oha; Ferry also proxies to
# the mock as a plain upstream (a route with `upstream` nodes and no plugin), like nginx does. Ferry and nginx run on
# CPU 0; the mock and oha on CPU 1. Prints Markdown tables: throughput and latency percentiles at
# c=32 and c=256 (chat and 18-chunk streams), latency at a fixed rate of half Ferry's maximum,
# unloaded latency and streaming time to first byte added over direct, RSS idle and peak, the
# memory for 10,000 concurrent slow streams, Ferry with kafka-logger (Tansu broker) on, with
# key-auth + limit-count (local, and on a redis-server when one is installed), and ai-proxy-multi
# (2 instances against single ai-proxy; the added latency of a failover before the first byte).
# Everything it starts is stopped by PID on exit.
# Usage: bench/macro.sh [seconds per run, default 10]
# Env: BENCH_SLOW=N concurrent slow streams (default 10000, 0 skips); BENCH_KAFKA=0 skips Kafka.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
slow_n=${BENCH_SLOW:-10000}
root=$PWD
command -v oha >/dev/null || cargo install oha --locked
command -v nginx >/dev/null || { apt-get install -y -qq nginx-light >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }; }
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null
cargo build --release -p ferry -p ferry-testkit --bins >/dev/null 2>&1
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

. bench/lib.sh

mock_port=$(free_port); port=$(free_port); admin_port=$(free_port); nginx_port=$(free_port)
start_mock "$mock_port" 1 --fast

ferry_config "$work/config.yaml" "$port" "$admin_port"
start_ferry "$root/target/release/ferry" 0

mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 16000; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  upstream mock { server 127.0.0.1:$mock_port; keepalive 256; }
  server {
    listen 127.0.0.1:$nginx_port backlog=4096;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
taskset -c 0 nginx -c "$work/nginx/nginx.conf" &
pids+=($!)
wait_port "$mock_port"; wait_port "$port"; wait_port "$admin_port"; wait_port "$nginx_port"
nginx_worker=$(pgrep -P "$(cat "$work/nginx/nginx.pid")" | head -1)

route() { # route ID URI EXTRA_PLUGINS EXTRA_AI_PROXY
  curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:$admin_port/apisix/admin/routes/$1" -X PUT -H "X-API-KEY: bench-key" -d "{
    \"uri\": \"$2\",
    \"plugins\": {\"ai-proxy\": {\"provider\": \"openai\", \"auth\": {\"header\": {\"Authorization\": \"Bearer token\"}},
      \"keepalive_pool\": 256, \"override\": {\"endpoint\": \"http://127.0.0.1:$mock_port/v1/chat/completions\"}$4}$3}}" | grep -q 20 || { echo "route $1 refused" >&2; exit 1; }
}
route chat /v1/chat/completions "" ""
route messages /v1/messages "" ""
route gemini "/gemini/*" "" ""
# Plain upstream proxying (no plugin), chosen by a header so the path stays the mock's.
curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:$admin_port/apisix/admin/routes/plain" -X PUT -H "X-API-KEY: bench-key" -d "{
  \"uri\": \"/v1/chat/completions\", \"priority\": 10, \"vars\": [[\"http_x_plain\", \"==\", \"1\"]],
  \"upstream\": {\"nodes\": {\"127.0.0.1:$mock_port\": 1}, \"keepalive_pool\": {\"size\": 256}}}" | grep -q 20 || { echo "route plain refused" >&2; exit 1; }

kafka_mode=""
if [ "${BENCH_KAFKA:-1}" = 1 ]; then
  tansu=${FERRY_TANSU:-$(tests/kafka/install-tansu.sh 2>/dev/null || true)}
  if [ -n "$tansu" ] && [ -x "$tansu" ]; then
    kport=$(free_port)
    taskset -c 1 "$tansu" broker --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" --storage-engine memory://tansu/ >/dev/null 2>&1 &
    pids+=($!)
    wait_port "$kport"
    "$tansu" topic create bench --partitions 1 --broker "tcp://127.0.0.1:$kport" >/dev/null 2>&1 || true
    route logged /logged/v1/chat/completions ", \"kafka-logger\": {\"brokers\": [{\"host\": \"127.0.0.1\", \"port\": $kport}], \"kafka_topic\": \"bench\", \"batch_max_size\": 1000, \"inactive_timeout\": 1}" ", \"logging\": {\"summaries\": true}"
    kafka_mode=1
  fi
fi

# key-auth + limit-count (local, and on Redis when redis-server is there), a budget no run reaches.
curl -s -o /dev/null "http://127.0.0.1:$admin_port/apisix/admin/consumers" -X PUT -H "X-API-KEY: bench-key" \
  -d '{"username": "bench", "plugins": {"key-auth": {"key": "bench-consumer-key"}}}'
limit='"count": 1000000000, "time_window": 3600, "key_type": "var", "key": "consumer_name"'
route authed /authed/v1/chat/completions ", \"key-auth\": {}, \"limit-count\": {$limit}" ""
redis_mode=""
if command -v redis-server >/dev/null; then
  rport=$(free_port)
  taskset -c 1 redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$rport"
  route authredis /authredis/v1/chat/completions ", \"key-auth\": {}, \"limit-count\": {$limit, \"policy\": \"redis\", \"redis_host\": \"127.0.0.1\", \"redis_port\": $rport}" ""
  redis_mode=1
fi

idle_rss=$(rss "$ferry_pid" VmRSS)
nginx_idle=$(rss "$nginx_worker" VmRSS)

body=$(bench_body chat)
stream_body=$(bench_body stream)
# ai-proxy-multi: two instances on the mock (round robin); and two fallback routes whose first
# instance fails before the first byte (refuses connections; answers 503) on every request.
multi_inst() { # NAME PRIORITY EXTRA_AUTH_HEADERS ENDPOINT
  echo "{\"name\": \"$1\", \"provider\": \"openai\", \"weight\": 1, \"priority\": $2,
    \"auth\": {\"header\": {\"Authorization\": \"Bearer token\"$3}}, \"override\": {\"endpoint\": \"$4\"}}"
}
multi_route() { # ID INSTANCES
  curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:$admin_port/apisix/admin/routes/$1" -X PUT -H "X-API-KEY: bench-key" -d "{
    \"uri\": \"/$1/v1/chat/completions\", \"plugins\": {\"ai-proxy-multi\": {\"keepalive_pool\": 256,
    \"fallback_strategy\": [\"http_5xx\"], \"instances\": [$2]}}}" | grep -q 20 || { echo "route $1 refused" >&2; exit 1; }
}
mock_url="http://127.0.0.1:$mock_port/v1/chat/completions"
multi_route multi "$(multi_inst a 0 "" "$mock_url"), $(multi_inst b 0 "" "$mock_url")"
multi_route refused "$(multi_inst down 1 "" "http://127.0.0.1:$(free_port)/v1/chat/completions"), $(multi_inst b 0 "" "$mock_url")"
multi_route failover "$(multi_inst down 1 ', "x-mock-status": "503"' "$mock_url"), $(multi_inst b 0 "" "$mock_url")"

# The same conversation as an Anthropic Messages stream and as a Gemini streamGenerateContent
# request (both converted to OpenAI chat upstream).
anthropic_body=$(bench_body anthropic)
gemini_body=$(bench_body gemini)

# run NAME URL BODY CONNS [oha args...] -> "rps p50 p90 p99 p99.9 non200" (ms)
run() {
  local name=$1 url=$2 data=$3 conns=$4; shift 4
  taskset -c 1 oha --no-tui --output-format json -z "${secs}s" -c "$conns" "$@" -m POST \
    -H "content-type: application/json" -H "authorization: Bearer token" -H "x-mock-chunks: 18" \
    -d "$data" "$url" > "$work/$name.json"
  python3 - "$work/$name.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, p = d["summary"], d["latencyPercentiles"]
# Requests still in flight when the run's time is up are cut off by oha: not failures.
bad = sum(v for k, v in d.get("statusCodeDistribution", {}).items() if k != "200") + sum(
    v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k)
ms = lambda k: f'{(p.get(k) or 0) * 1000:.2f}'
print(f'{s["requestsPerSec"]:.0f} {ms("p50")} {ms("p90")} {ms("p99")} {ms("p99.9")} {bad}')
PY
}

direct="http://127.0.0.1:$mock_port/v1/chat/completions"
viangx="http://127.0.0.1:$nginx_port/v1/chat/completions"
gw="http://127.0.0.1:$port/v1/chat/completions"
run warm "$gw" "$body" 32 >/dev/null
declare -A R
for t in direct nginx ferry plain; do
  extra=()
  case $t in direct) u=$direct ;; nginx) u=$viangx ;; ferry) u=$gw ;; plain) u=$gw; extra=(-H "x-plain: 1") ;; esac
  for c in 32 256; do
    t0=$(ticks "$ferry_pid"); n0=$(ticks "$nginx_worker")
    R[$t.chat.$c]=$(run "$t-chat-$c" "$u" "$body" "$c" "${extra[@]}")
    [ "$t" = plain ] && R[cpu.plain.$c]=$(( ($(ticks "$ferry_pid") - t0) * 10000 * 1000 / ($(echo "${R[$t.chat.$c]}" | cut -d' ' -f1) * secs) ))
    [ "$t" = nginx ] && R[cpu.nginx.$c]=$(( ($(ticks "$nginx_worker") - n0) * 10000 * 1000 / ($(echo "${R[$t.chat.$c]}" | cut -d' ' -f1) * secs) ))
    [ "$t" = ferry ] && R[cpu.chat.$c]=$(( ($(ticks "$ferry_pid") - t0) * 10000 * 1000 / ($(echo "${R[$t.chat.$c]}" | cut -d' ' -f1) * secs) ))
    t0=$(ticks "$ferry_pid")
    [ "$t" = ferry ] && [ "$c" = 32 ] && peak_chat=$(rss "$ferry_pid" VmHWM)
    R[$t.stream.$c]=$(run "$t-stream-$c" "$u" "$stream_body" "$c" "${extra[@]}")
    [ "$t" = ferry ] && R[cpu.stream.$c]=$(( ($(ticks "$ferry_pid") - t0) * 10000 * 1000 / ($(echo "${R[$t.stream.$c]}" | cut -d' ' -f1) * secs) ))
  done
done
t0=$(ticks "$ferry_pid")
R[convert.stream.32]=$(run convert-stream "http://127.0.0.1:$port/v1/messages" "$anthropic_body" 32)
R[cpu.convert]=$(( ($(ticks "$ferry_pid") - t0) * 10000 * 1000 / ($(echo "${R[convert.stream.32]}" | cut -d' ' -f1) * secs) ))
t0=$(ticks "$ferry_pid")
R[gemini.stream.32]=$(run gemini-stream "http://127.0.0.1:$port/gemini/v1beta/models/gpt-4o-mini:streamGenerateContent?alt=sse" "$gemini_body" 32)
R[cpu.gemini]=$(( ($(ticks "$ferry_pid") - t0) * 10000 * 1000 / ($(echo "${R[gemini.stream.32]}" | cut -d' ' -f1) * secs) ))
peak_rss=$(rss "$ferry_pid" VmHWM)
nginx_peak=$(rss "$nginx_worker" VmHWM)
if [ -n "$kafka_mode" ]; then
  t0=$(ticks "$ferry_pid")
  R[kafka.chat.32]=$(run kafka-chat "http://127.0.0.1:$port/logged/v1/chat/completions" "$body" 32)
  R[cpu.kafka.chat]=$(( ($(ticks "$ferry_pid") - t0) * 10000 * 1000 / ($(echo "${R[kafka.chat.32]}" | cut -d' ' -f1) * secs) ))
  t0=$(ticks "$ferry_pid")
  R[kafka.stream.32]=$(run kafka-stream "http://127.0.0.1:$port/logged/v1/chat/completions" "$stream_body" 32)
  R[cpu.kafka.stream]=$(( ($(ticks "$ferry_pid") - t0) * 10000 * 1000 / ($(echo "${R[kafka.stream.32]}" | cut -d' ' -f1) * secs) ))
fi
for t in authed authredis; do
  [ "$t" = authredis ] && [ -z "$redis_mode" ] && continue
  t0=$(ticks "$ferry_pid")
  R[$t.chat.32]=$(run "$t-chat" "http://127.0.0.1:$port/$t/v1/chat/completions" "$body" 32 -H "apikey: bench-consumer-key")
  R[cpu.$t]=$(( ($(ticks "$ferry_pid") - t0) * 10000 * 1000 / ($(echo "${R[$t.chat.32]}" | cut -d' ' -f1) * secs) ))
done
# ai-proxy-multi against a single ai-proxy, back to back (twice, alternating).
for round in 1 2; do
  for t in ferry multi; do
    case $t in ferry) u=$gw ;; multi) u="http://127.0.0.1:$port/multi/v1/chat/completions" ;; esac
    t0=$(ticks "$ferry_pid")
    R[pair$round.$t.chat]=$(run "pair$round-$t-chat" "$u" "$body" 32)
    R[cpu.pair$round.$t]=$(( ($(ticks "$ferry_pid") - t0) * 10000 * 1000 / ($(echo "${R[pair$round.$t.chat]}" | cut -d' ' -f1) * secs) ))
    R[pair$round.$t.stream]=$(run "pair$round-$t-stream" "$u" "$stream_body" 32)
  done
done
# Fixed rate: half of Ferry's maximum at c=32, the same rate for every target.
rate=$(( $(echo "${R[ferry.chat.32]}" | cut -d' ' -f1) / 2 ))
for t in direct nginx ferry; do
  case $t in direct) u=$direct ;; nginx) u=$viangx ;; ferry) u=$gw ;; esac
  R[$t.fixed]=$(run "$t-fixed" "$u" "$body" 32 -q "$rate")
done

# Unloaded: everything on CPU 1 (waking an idle second CPU costs ~50 µs per hop on this kind
# of VM), one connection; then time to first byte of a stream, direct and through Ferry.
taskset -a -p -c 1 "$ferry_pid" >/dev/null
R[direct.c1]=$(run direct-c1 "$direct" "$body" 1)
R[ferry.c1]=$(run ferry-c1 "$gw" "$body" 1)
ttfb() { # URL -> median time to first byte in µs over 300 requests on one connection
  taskset -c 1 python3 - "$1" "$stream_body" <<'PY'
import http.client, sys, time, statistics, urllib.parse
u = urllib.parse.urlparse(sys.argv[1]); body = sys.argv[2].encode()
c = http.client.HTTPConnection(u.hostname, u.port)
h = {"content-type": "application/json", "authorization": "Bearer token", "x-mock-chunks": "18"}
xs = []
for i in range(330):
    t = time.perf_counter(); c.request("POST", u.path, body, h); r = c.getresponse(); r.read(1)
    x = time.perf_counter() - t; r.read()
    if i >= 30: xs.append(x)
print(f"{statistics.median(xs) * 1e6:.0f}")
PY
}
ttfb_direct=$(ttfb "$direct")
ttfb_ferry=$(ttfb "$gw")
R[multi.c1]=$(run multi-c1 "http://127.0.0.1:$port/multi/v1/chat/completions" "$body" 1)
R[refused.c1]=$(run refused-c1 "http://127.0.0.1:$port/refused/v1/chat/completions" "$body" 1)
R[failover.c1]=$(run failover-c1 "http://127.0.0.1:$port/failover/v1/chat/completions" "$body" 1)
ttfb_refused=$(ttfb "http://127.0.0.1:$port/refused/v1/chat/completions")
ttfb_failover=$(ttfb "http://127.0.0.1:$port/failover/v1/chat/completions")
taskset -a -p -c 0 "$ferry_pid" >/dev/null

# Slow streams: N connections each holding a stream of one event a second.
slow_line="skipped"
if [ "$slow_n" -gt 0 ]; then
  before=$(rss "$ferry_pid" VmRSS)
  taskset -c 1 oha --no-tui --output-format json -z 25s -c "$slow_n" -m POST \
    -H "content-type: application/json" -H "authorization: Bearer token" \
    -H "x-mock-chunks: 12" -H "x-mock-chunk-delay-ms: 1000" \
    -d "$stream_body" "$gw" > "$work/slow.json" &
  slow_pid=$!
  pids+=($slow_pid)
  slow_rss=0
  for _ in $(seq 24); do
    sleep 1
    r=$(rss "$ferry_pid" VmRSS)
    if python3 -c "import sys; sys.exit(0 if $r > $slow_rss else 1)"; then slow_rss=$r; fi
  done
  wait "$slow_pid" || true
  slow_ok=$(python3 -c "import json; d=json.load(open('$work/slow.json')); print(d['statusCodeDistribution'].get('200', 0))")
  slow_line="$slow_n concurrent slow streams (one event a second): Ferry RSS ${before} MB before, ${slow_rss} MB at most while they were open (${slow_ok} streams of 12 s completed in 25 s)."
fi

cols() { echo "$1" | awk '{printf "| %s | %s | %s | %s | %s |", $1, $2, $4, $5, $6}'; }
ratio() { python3 -c "import sys; a, b = float('$1'.split()[0]), float('$2'.split()[0]); print(f'{a / b:.2f}' if b else '-')"; }
echo "Ferry macro benchmark, $(date -u +%Y-%m-%d), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), ${secs}s per run."
echo "Ferry and nginx on CPU 0, mock (ferry-mock --fast) and oha on CPU 1. Chat: $(echo -n "$body" | wc -c)-byte request, $(curl -s "$direct" -H 'authorization: Bearer token' -d "$body" | wc -c)-byte answer; stream: $(curl -s "$direct" -H 'authorization: Bearer token' -H 'x-mock-chunks: 18' -d "$stream_body" | grep -c '^data:') events, $(curl -s "$direct" -H 'authorization: Bearer token' -H 'x-mock-chunks: 18' -d "$stream_body" | wc -c) bytes."
echo
echo "| target | conns | chat req/s | p50 ms | p99 ms | p99.9 ms | non-200 | stream req/s | p50 ms | p99 ms | p99.9 ms | non-200 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for t in direct nginx ferry plain; do
  case $t in direct) n="mock directly" ;; nginx) n="nginx proxy_pass" ;; ferry) n="Ferry ai-proxy" ;; plain) n="Ferry upstream (no plugin)" ;; esac
  for c in 32 256; do
    echo "| $n | $c $(cols "${R[$t.chat.$c]}") $(cols "${R[$t.stream.$c]}" | cut -c2-)"
  done
done
if [ -n "$kafka_mode" ]; then
  echo "| Ferry + kafka-logger (summaries) | 32 $(cols "${R[kafka.chat.32]}") $(cols "${R[kafka.stream.32]}" | cut -c2-)"
fi
echo "| Ferry, Anthropic client → OpenAI stream (converted) | 32 | | | | | | $(cols "${R[convert.stream.32]}" | cut -c3-)"
echo "| Ferry, Gemini client → OpenAI stream (converted, alt=sse) | 32 | | | | | | $(cols "${R[gemini.stream.32]}" | cut -c3-)"
echo "| Ferry + key-auth + limit-count (local) | 32 $(cols "${R[authed.chat.32]}") | | | | | |"
if [ -n "$redis_mode" ]; then
  echo "| Ferry + key-auth + limit-count (redis) | 32 $(cols "${R[authredis.chat.32]}") | | | | | |"
fi
echo
echo "| ratio | chat c=32 | chat c=256 | stream c=32 | stream c=256 |"
echo "|---|---|---|---|---|"
echo "| Ferry / nginx proxy | $(ratio "${R[ferry.chat.32]}" "${R[nginx.chat.32]}") | $(ratio "${R[ferry.chat.256]}" "${R[nginx.chat.256]}") | $(ratio "${R[ferry.stream.32]}" "${R[nginx.stream.32]}") | $(ratio "${R[ferry.stream.256]}" "${R[nginx.stream.256]}") |"
echo "| Ferry upstream (no plugin) / nginx proxy | $(ratio "${R[plain.chat.32]}" "${R[nginx.chat.32]}") | $(ratio "${R[plain.chat.256]}" "${R[nginx.chat.256]}") | $(ratio "${R[plain.stream.32]}" "${R[nginx.stream.32]}") | $(ratio "${R[plain.stream.256]}" "${R[nginx.stream.256]}") |"
echo "| nginx proxy / direct | $(ratio "${R[nginx.chat.32]}" "${R[direct.chat.32]}") | $(ratio "${R[nginx.chat.256]}" "${R[direct.chat.256]}") | $(ratio "${R[nginx.stream.32]}" "${R[direct.stream.32]}") | $(ratio "${R[nginx.stream.256]}" "${R[direct.stream.256]}") |"
echo "| Ferry converting Anthropic → OpenAI / nginx proxy | | | $(ratio "${R[convert.stream.32]}" "${R[nginx.stream.32]}") | |"
echo "| Ferry converting Gemini → OpenAI / nginx proxy | | | $(ratio "${R[gemini.stream.32]}" "${R[nginx.stream.32]}") | |"
if [ -n "$kafka_mode" ]; then
  echo "| Ferry + kafka-logger / Ferry | $(ratio "${R[kafka.chat.32]}" "${R[ferry.chat.32]}") | | $(ratio "${R[kafka.stream.32]}" "${R[ferry.stream.32]}") | |"
fi
echo
echo "Ferry's own CPU time per request (utime + stime over the run / requests): chat ${R[cpu.chat.32]} ns (c=32), ${R[cpu.chat.256]} ns (c=256); stream ${R[cpu.stream.32]} ns (c=32), ${R[cpu.stream.256]} ns (c=256); converted Anthropic stream ${R[cpu.convert]} ns, converted Gemini stream ${R[cpu.gemini]} ns (c=32)."
echo "key-auth + limit-count, chat c=32: local $(ratio "${R[authed.chat.32]}" "${R[ferry.chat.32]}") of plain ai-proxy's req/s, ${R[cpu.authed]} ns of Ferry CPU per request (plain: ${R[cpu.chat.32]} ns)$([ -n "$redis_mode" ] && echo "; redis $(ratio "${R[authredis.chat.32]}" "${R[ferry.chat.32]}"), ${R[cpu.authredis]} ns")."
echo "Plain proxying, CPU time per chat request: Ferry upstream (no plugin) ${R[cpu.plain.32]} ns (c=32), ${R[cpu.plain.256]} ns (c=256); the nginx worker ${R[cpu.nginx.32]} ns (c=32), ${R[cpu.nginx.256]} ns (c=256)."
if [ -n "$kafka_mode" ]; then
  echo "With kafka-logger (the broker shares CPU 1 with the mock and oha): chat ${R[cpu.kafka.chat]} ns, stream ${R[cpu.kafka.stream]} ns per request."
fi
echo
echo "Fixed rate of $rate req/s (half Ferry's chat maximum), c=32:"
echo
echo "| target | p50 ms | p90 ms | p99 ms | p99.9 ms |"
echo "|---|---|---|---|---|"
for t in direct nginx ferry; do
  echo "| $t $(echo "${R[$t.fixed]}" | awk '{printf "| %s | %s | %s | %s |", $2, $3, $4, $5}')"
done
echo
python3 -c "d, f = float('${R[direct.c1]}'.split()[1]), float('${R[ferry.c1]}'.split()[1]); print(f'Unloaded (c=1, all on CPU 1) chat p50: direct {d*1000:.0f} µs, through Ferry {f*1000:.0f} µs: {(f-d)*1000:.0f} µs added.')"
echo "Stream time to first byte (median of 300, one connection, all on CPU 1): direct ${ttfb_direct} µs, through Ferry ${ttfb_ferry} µs: $((ttfb_ferry - ttfb_direct)) µs added."
echo
avg() { python3 -c "import sys; a, b = float('$1'.split()[0]), float('$2'.split()[0]); print(f'{(a + b) / 2:.0f}')"; }
multi_chat=$(avg "${R[pair1.multi.chat]}" "${R[pair2.multi.chat]}"); single_chat=$(avg "${R[pair1.ferry.chat]}" "${R[pair2.ferry.chat]}")
multi_stream=$(avg "${R[pair1.multi.stream]}" "${R[pair2.multi.stream]}"); single_stream=$(avg "${R[pair1.ferry.stream]}" "${R[pair2.ferry.stream]}")
echo "ai-proxy-multi, 2 instances (round robin), c=32, two alternating rounds: chat ${multi_chat} req/s vs single ai-proxy ${single_chat} req/s = $(ratio "$multi_chat" "$single_chat"); stream ${multi_stream} vs ${single_stream} = $(ratio "$multi_stream" "$single_stream"); Ferry CPU per chat request $(( (R[cpu.pair1.multi] + R[cpu.pair2.multi]) / 2 )) ns vs $(( (R[cpu.pair1.ferry] + R[cpu.pair2.ferry]) / 2 )) ns."
python3 -c "f, m, r, o = (float(x.split()[1]) for x in ('${R[ferry.c1]}', '${R[multi.c1]}', '${R[refused.c1]}', '${R[failover.c1]}')); print(f'Failover before the first byte (unloaded, c=1, chat p50): single ai-proxy {f*1000:.0f} µs, ai-proxy-multi {m*1000:.0f} µs, first instance refusing connections {r*1000:.0f} µs (+{(r-f)*1000:.0f}), first instance answering 503 {o*1000:.0f} µs (+{(o-f)*1000:.0f}).')"
echo "Stream time to first byte through a failover (median of 300): first instance refusing ${ttfb_refused} µs, answering 503 ${ttfb_failover} µs, against ${ttfb_ferry} µs with no failover."
echo "Ferry RSS: ${idle_rss} MB idle, ${peak_chat} MB peak after the c=32 chat run, ${peak_rss} MB peak after all runs (VmHWM). nginx worker: ${nginx_idle} → ${nginx_peak} MB."
echo "$slow_line"
