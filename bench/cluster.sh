#!/usr/bin/env bash
# The cluster figures of issue #12, against a release build and a real etcd (Debian's
# etcd-server and etcd-client; started on free ports and stopped by the program):
#  1. propagation: etcd acknowledges a put -> all three nodes (2 traditional, 1 data plane)
#     serve the route, p50/p99/max over N writes;
#  2. data-plane throughput on one node without writes, with 50 etcd writes/s outside its
#     prefix (etcd's own cost) and inside it (applied by the node), medians of 5 interleaved rounds;
#  3. start-up of a data plane with M routes already in etcd, until its port listens.
# Usage: bench/cluster.sh [writes=200] [routes=10000] [secs=5]
# Env: FERRY_BIN=path to another ferry binary.
set -euo pipefail
cd "$(dirname "$0")/.."
writes=${1:-200}
routes=${2:-10000}
secs=${3:-5}
bin=${FERRY_BIN:-target/release/ferry}
if [ -z "${FERRY_BIN:-}" ]; then cargo build --release -p ferry >/dev/null 2>&1; fi
cargo build --release -p ferry-testkit --bin ferry-cluster-bench >/dev/null 2>&1
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') ($(nproc) cores)"
echo "etcd: $(etcd --version | head -1)"
target/release/ferry-cluster-bench "$(readlink -f "$bin")" --writes "$writes" --routes "$routes" --secs "$secs"
