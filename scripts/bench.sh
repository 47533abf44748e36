#!/usr/bin/env bash
# Measures distributed_kv and etcd on this machine in one run: a local 3-node cluster of each
# (one at a time, so they never compete for the CPU), the same kvbench load against each.
# Installs etcd-server (Debian's package) if it is missing. Prints one kvbench line per run.
#   scripts/bench.sh                         64 clients, 20000 ops, 256-byte values
#   CLIENTS=16 OPS=5000 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS="${CLIENTS:-64}"
OPS="${OPS:-20000}"
VALUE="${VALUE:-256}"
WORKLOADS="${WORKLOADS:-put get mixed}"

if ! command -v etcd >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  # Debian starts a system etcd on the default ports; the benchmark uses its own.
  $SUDO systemctl stop etcd 2>/dev/null || $SUDO pkill -x etcd 2>/dev/null || true
fi
cargo build --release --bin distributed_kv --bin kvbench --bin kvctl

WORK=$(mktemp -d)
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT
BENCH="./target/release/kvbench --clients $CLIENTS --ops $OPS --value-size $VALUE"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(etcd --version | head -1)"

# distributed_kv: ports 46101.., data in $WORK.
source scripts/lib.sh
start_kv_cluster ./target/release 46100 kv
./target/release/kvctl --endpoints "$KV_EPS" --timeout-ms 20000 set warmup 1 >/dev/null
for w in $WORKLOADS; do $BENCH --target kv --endpoints "$KV_EPS" --workload "$w"; done
echo "distributed_kv data dir after the run: $(du -sh "$WORK/kv1" | cut -f1) (node 1)"
stop_all

# etcd: ports 47101.., data in $WORK.
BASE=47100
INITIAL="e1=http://127.0.0.1:$((BASE + 2)),e2=http://127.0.0.1:$((BASE + 12)),e3=http://127.0.0.1:$((BASE + 22))"
ETCD_EPS="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 11)),127.0.0.1:$((BASE + 21))"
for i in 1 2 3; do
  c="http://127.0.0.1:$((BASE + 10 * (i - 1) + 1))"; p="http://127.0.0.1:$((BASE + 10 * (i - 1) + 2))"
  etcd --name "e$i" --data-dir "$WORK/etcd$i" --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "$INITIAL" \
    --initial-cluster-state new --log-level error 2>"$WORK/etcd$i.log" &
  PIDS+=($!)
done
# Wait until the etcd cluster accepts a write.
for _ in $(seq 1 100); do
  if $BENCH --target etcd --endpoints "$ETCD_EPS" --clients 1 --ops 1 --workload put 2>/dev/null | grep -q "errors=0"; then break; fi
  sleep 0.2
done
for w in $WORKLOADS; do $BENCH --target etcd --endpoints "$ETCD_EPS" --workload "$w"; done
echo "etcd data dir after the run: $(du -sh "$WORK/etcd1" | cut -f1) (member 1)"
