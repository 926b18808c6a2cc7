# Shared by the benchmark scripts (sourced): ports, PIDs stopped on exit, /proc readings, and a
# Ferry config.yaml for one node on 127.0.0.1.
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
# CPU ticks of a process; a /proc/PID/status field (VmRSS, VmHWM) in MiB, or in KiB.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss() { awk -v k="$2" '$1 == k":" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }

# ferry_config FILE PORT ADMIN_PORT: one worker thread, access log and data in $work.
ferry_config() {
  cat > "$1" <<YAML
plugin_attr:
  prometheus:
    enable_export_server: false
apisix:
  node_listen: [{ip: 127.0.0.1, port: $2}]
  ssl:
    enable: false
deployment:
  admin:
    admin_key: [{name: admin, key: bench-key, role: admin}]
    admin_listen: {ip: 127.0.0.1, port: $3}
nginx_config:
  http:
    access_log: $work/access.log
ferry:
  data_dir: $work/data
  worker_threads: 1
YAML
}

# bench_body chat|stream|anthropic|gemini: the benchmark's one conversation as a request body
# (OpenAI chat, the same streamed, an Anthropic Messages stream, a Gemini streamGenerateContent).
bench_body() {
  python3 - "$1" <<'PY'
import json, sys
sys_text = "You are a helpful assistant. Answer briefly and precisely."
user = "Summarise the plot of a short story about a ferry crossing a river at night, in two sentences, and name the captain. " * 2
chat = {"model": "gpt-4o-mini", "temperature": 0.2, "messages": [{"role": "system", "content": sys_text}, {"role": "user", "content": user}]}
kind = sys.argv[1]
if kind == "stream":
    chat["stream"] = True
elif kind == "anthropic":
    chat = {"model": "gpt-4o-mini", "max_tokens": 256, "stream": True, "system": sys_text, "messages": [{"role": "user", "content": user}]}
elif kind == "gemini":
    chat = {"systemInstruction": {"parts": [{"text": sys_text}]}, "contents": [{"role": "user", "parts": [{"text": user}]}], "generationConfig": {"temperature": 0.2}}
print(json.dumps(chat))
PY
}

# start_mock PORT CPU [ARGS...]: the project's mock provider (one thread) on CPU, key `token`.
start_mock() {
  local port=$1 cpu=$2
  shift 2
  FERRY_MOCK_THREADS=1 taskset -c "$cpu" target/release/ferry-mock --listen "127.0.0.1:$port" --key token "$@" 2>/dev/null &
  pids+=($!)
}

# start_ferry BIN CPU: Ferry serving $work/config.yaml on CPU (log in $work/ferry.log); sets
# ferry_pid.
start_ferry() {
  (cd "$work" && exec taskset -c "$2" "$1" serve --config config.yaml 2>"$work/ferry.log") &
  ferry_pid=$!
  pids+=($ferry_pid)
}
