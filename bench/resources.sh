#!/usr/bin/env bash
# The resource-model figures of issue #10, end to end against a release build (embedded
# SQLite store, data dir in a temp folder):
#  1. `adc sync` of N services with one route each into an empty Ferry (the real ADC CLI:
#     FERRY_ADC, or ../shared/tools/adc/adc), wall time of the whole CLI run;
#  2. `PUT /apisix/admin/configs` of M routes (standalone, API-driven) until the data plane
#     serves the last one: the time from sending the document to the first 200 on its route.
# Usage: bench/resources.sh [services=1000] [routes=10000]
# Env: FERRY_BIN=path to another ferry binary.
set -euo pipefail
cd "$(dirname "$0")/.."
services=${1:-1000}
routes=${2:-10000}
bin=${FERRY_BIN:-target/release/ferry}
if [ -z "${FERRY_BIN:-}" ]; then cargo build --release -p ferry >/dev/null 2>&1; fi
adc=${FERRY_ADC:-../shared/tools/adc/adc}
work=$(mktemp -d)
pid=""
stop() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi; }
trap 'stop; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # $1: extra deployment keys
  port=$(free_port); admin=$(free_port)
  rm -rf "$work/data"
  cat > "$work/config.yaml" <<YAML
apisix:
  node_listen: [{ip: 127.0.0.1, port: $port}]
  ssl:
    enable: false
deployment:
$1  admin:
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
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$admin/apisix/admin" -I && break; sleep 0.05; done
}

echo "Resource-model figures, $(date -u +%Y-%m-%d), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $bin"
echo

# 1. ADC sync of N services, one route each (embedded store; then etcd when it is installed).
python3 - "$services" > "$work/adc.yaml" <<'PY'
import sys
n = int(sys.argv[1])
print("services:")
for i in range(n):
    print(f"""  - name: svc-{i}
    upstream:
      nodes:
        - host: 127.0.0.1
          port: 1980
          weight: 1
    routes:
      - name: route-{i}
        uris:
          - /svc/{i}
        methods:
          - POST
        plugins:
          ai-proxy:
            provider: openai
            auth:
              header:
                Authorization: "Bearer sk-bench"
            options:
              model: gpt-4""")
PY
adc_sync() { # $1: store name
  t0=$(date +%s.%N)
  "$adc" sync -f "$work/adc.yaml" --server "http://127.0.0.1:$admin" --token bench-key >"$work/adc.log" 2>&1 \
    || { tail -5 "$work/adc.log"; exit 1; }
  t1=$(date +%s.%N)
  got=$(curl -s -H 'X-API-KEY: bench-key' "http://127.0.0.1:$admin/apisix/admin/routes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
  printf -- "- adc sync of %d services with one route each into %s (%d routes stored): %.2f s\n" "$services" "$1" "$got" "$(echo "$t1 - $t0" | bc)"
}
start ""
adc_sync "the embedded store"
stop
if command -v etcd >/dev/null; then
  ec=$(free_port); ep=$(free_port)
  etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$ec" --advertise-client-urls "http://127.0.0.1:$ec" \
    --listen-peer-urls "http://127.0.0.1:$ep" --initial-advertise-peer-urls "http://127.0.0.1:$ep" \
    --initial-cluster "default=http://127.0.0.1:$ep" >"$work/etcd.log" 2>&1 &
  etcd_pid=$!
  trap 'stop; kill $etcd_pid 2>/dev/null; wait $etcd_pid 2>/dev/null; rm -rf "$work"' EXIT
  sleep 1
  start "  etcd:
    host: [\"http://127.0.0.1:$ec\"]
"
  adc_sync "etcd (one local member)"
  stop
fi

# 2. PUT /configs of M routes until the last one is served.
start "  role: traditional
  role_traditional:
    config_provider: yaml
"
python3 - "$routes" "$work/doc.json" <<'PY'
import json, sys
n, out = int(sys.argv[1]), sys.argv[2]
doc = {"upstreams": [{"id": "u1", "nodes": {"127.0.0.1:1": 1}}],
       "routes": [{"id": f"r{i}", "uri": f"/r/{i}", "methods": ["POST"],
                   "plugins": {"ai-proxy": {"provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-bench"}},
                                            "options": {"model": "gpt-4"}}}} for i in range(n)]}
json.dump(doc, open(out, "w"))
PY
python3 - "$admin" "$port" "$routes" "$work/doc.json" <<'PY'
import http.client, sys, time
admin, port, n, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
body = open(path, "rb").read()
last = f"/r/{n-1}"
c = http.client.HTTPConnection("127.0.0.1", admin, timeout=120)
d = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
t0 = time.monotonic()
c.request("PUT", "/apisix/admin/configs", body, {"X-API-KEY": "bench-key", "X-Digest": "bench-1", "Content-Type": "application/json"})
r = c.getresponse(); r.read()
t_put = time.monotonic() - t0
assert r.status == 202, r.status
while True:
    # not JSON: ai-proxy answers 400 at once, while a missing route answers 404
    d.request("POST", last, b"x", {"Content-Type": "application/json"}); g = d.getresponse(); g.read()
    if g.status != 404: break
    time.sleep(0.005)
t_served = time.monotonic() - t0
print(f"- PUT /apisix/admin/configs of {n} routes ({len(body)/1e6:.1f} MB): answered 202 in {t_put:.2f} s, last route served after {t_served:.2f} s")
PY
stop
