#!/usr/bin/env bash
# Hardening figures, one command: builds release, starts the project's mock provider and Ferry
# (one worker thread, CPU 0), then measures
#   - Ferry's peak RSS while a stream whose second event is a 20 MB line is refused
#     (passed through, and converted for an Anthropic client), with the default 4 MiB bound;
#   - Ferry's RSS idle and with 10,000 idle client connections open (then one more request's
#     latency), beside nginx holding the same 10,000 idle connections.
# Everything it starts is stopped by PID on exit. Usage: bench/hardening.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
command -v nginx >/dev/null || { apt-get install -y -qq nginx-light >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }; }
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null
cargo build --release -p ferry -p ferry-testkit --bins >/dev/null 2>&1
ulimit -n "$(ulimit -Hn)"

. bench/lib.sh
mib() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1024 }'; }

mock_port=$(free_port); port=$(free_port); admin_port=$(free_port); nginx_port=$(free_port)
start_mock "$mock_port" 1
ferry_config "$work/config.yaml" "$port" "$admin_port"
start_ferry "$root/target/release/ferry" 0
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
worker_rlimit_nofile 30000;
events { worker_connections 12000; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  server { listen 127.0.0.1:$nginx_port backlog=4096; location / { return 404; } }
}
NGINX
taskset -c 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>/dev/null &
nginx_pid=$!
pids+=($nginx_pid)
wait_port "$mock_port"; wait_port "$port"; wait_port "$admin_port"; wait_port "$nginx_port"
nginx_worker=$(pgrep -P "$(cat "$work/nginx/nginx.pid")" | head -1)

admin() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/apisix/admin$1" -X PUT -H 'X-API-KEY: bench-key' -d "$2"; }
ai='{"provider": "openai", "auth": {"header": {"Authorization": "Bearer token"}}, "override": {"endpoint": "http://127.0.0.1:'$mock_port'/v1/chat/completions"}}'
admin /routes/chat '{"uri": "/v1/chat/completions", "plugins": {"ai-proxy": '"$ai"'}}' >/dev/null
admin /routes/msgs '{"uri": "/v1/messages", "plugins": {"ai-proxy": '"$ai"'}}' >/dev/null
sleep 0.3
# Warm up: pools and buffers allocated once.
for _ in 1 2 3; do
  curl -s -o /dev/null "http://127.0.0.1:$port/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
done

cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
echo "## Hardening figures ($cpu, $(nproc) vCPU; Ferry and nginx on CPU 0, one worker each)"
echo
idle_conns() {
  # Opens 10,000 connections to port $1, holds them until stdin closes.
  python3 - "$1" <<'PY'
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(10000)]
print("open", flush=True)
time.sleep(3)
print("done", flush=True)
PY
}
measure() {
  local name=$1 pid=$2 p=$3
  local before after
  before=$(kib "$pid" VmRSS)
  coproc CONNS { idle_conns "$p"; }
  read -r _ <&"${CONNS[0]}"
  sleep 1
  after=$(kib "$pid" VmRSS)
  local t
  t=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$p/none")
  read -r _ <&"${CONNS[0]}" || true
  wait "$CONNS_PID" 2>/dev/null || true
  printf '| %s | %s MiB | %s MiB | %s bytes | %s ms |\n' "$name" "$(mib "$before")" "$(mib "$after")" \
    "$(( (after - before) * 1024 / 10000 ))" "$(awk -v t="$t" 'BEGIN { printf "%.1f", t * 1000 }')"
}
long() {
  local path=$1 body=$2
  curl -s -o /dev/null "http://127.0.0.1:$port$path" -H 'content-type: application/json' \
    -H 'anthropic-version: 2023-06-01' -H 'x-mock-long-line: 20000000' -d "$body" || true
}
peak0=$(kib "$ferry_pid" VmHWM)
rss0=$(kib "$ferry_pid" VmRSS)
long /v1/chat/completions '{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
peak1=$(kib "$ferry_pid" VmHWM)
long /v1/messages '{"model": "m", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
peak2=$(kib "$ferry_pid" VmHWM)
echo "| a 20 MB SSE line refused (bound 4 MiB) | RSS before | peak RSS after |"
echo "|---|---|---|"
echo "| passed through (OpenAI chat) | $(mib "$rss0") MiB | $(mib "$peak1") MiB (peak before: $(mib "$peak0") MiB) |"
echo "| converted (Anthropic client) | | $(mib "$peak2") MiB |"
echo
echo "| 10,000 idle client connections | RSS before | RSS with them | per connection | one more request |"
echo "|---|---|---|---|---|"
measure Ferry "$ferry_pid" "$port"
measure "nginx worker" "$nginx_worker" "$nginx_port"
echo
