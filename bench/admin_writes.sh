#!/usr/bin/env bash
# What one Admin API write costs as the number of routes grows. Builds release, starts Ferry
# (embedded SQLite store, data dir in a temp folder), then for each size: creates that many
# routes one by one (docs-style ai-proxy + prometheus routes, distinct uris; the load rate is
# reported), and times 200 writes to one route (its model alternates, so its ai-proxy instance
# is rebuilt each time). Each write is answered only once the data plane runs it, so the time is
# validate + SQLite commit (fsync) + apply. Prints a Markdown table. Stops Ferry by PID.
# Usage: bench/admin_writes.sh [sizes...]   (default: 0 2000 5000 10000)
# Env: FERRY_BIN=path to another ferry binary (e.g. an older build, for a before/after pair).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(0 2000 5000 10000)
bin=${FERRY_BIN:-target/release/ferry}
if [ -z "${FERRY_BIN:-}" ]; then cargo build --release -p ferry >/dev/null 2>&1; fi
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "Admin API write cost, $(date -u +%Y-%m-%d), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $bin"
echo
echo "| routes | load rate (routes/s) | write p50 | write p90 | write p99 | write mean |"
echo "|---|---|---|---|---|---|"
for n in "${sizes[@]}"; do
  port=$(free_port); admin=$(free_port)
  rm -rf "$work/data"
  cat > "$work/config.yaml" <<YAML
apisix:
  node_listen: [{ip: 127.0.0.1, port: $port}]
  ssl:
    enable: false
deployment:
  admin:
    admin_key: [{name: admin, key: bench-key, role: admin}]
    admin_listen: {ip: 127.0.0.1, port: $admin}
plugin_attr:
  prometheus:
    enable_export_server: false
nginx_config:
  http:
    enable_access_log: false
ferry:
  data_dir: $work/data
YAML
  "$bin" serve --config "$work/config.yaml" 2>"$work/ferry.log" &
  pid=$!
  python3 - "$admin" "$n" <<'PY'
import http.client, json, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(200):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60); c.connect(); break
    except OSError:
        time.sleep(0.05)
H = {"X-API-KEY": "bench-key", "Content-Type": "application/json"}
def route(i, model):
    return json.dumps({"uri": f"/v1/team{i}/chat/completions", "methods": ["POST"],
        "vars": [["http_x_team", "==", f"team{i}"]],
        "plugins": {"ai-proxy": {"provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-test"}},
                                 "options": {"model": model}},
                    "prometheus": {}}})
def put(i, model):
    c.request("PUT", f"/apisix/admin/routes/r{i}", route(i, model), H)
    r = c.getresponse(); r.read()
    if r.status not in (200, 201):
        sys.exit(f"write refused: {r.status}")
t = time.perf_counter()
for i in range(n):
    put(i, "gpt-4o")
load = time.perf_counter() - t
times = []
for k in range(200):
    t = time.perf_counter()
    put(n, "gpt-4o-mini" if k % 2 else "gpt-4o")
    times.append((time.perf_counter() - t) * 1000)
times.sort()
q = lambda p: times[min(len(times) - 1, int(len(times) * p))]
rate = f"{n / load:,.0f}" if n else "-"
print(f"| {n:,} | {rate} | {q(0.5):.2f} ms | {q(0.9):.2f} ms | {q(0.99):.2f} ms | {sum(times)/len(times):.2f} ms |")
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
