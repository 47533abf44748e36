#!/usr/bin/env bash
# Builds distributed_kv and runs the local 3-node cluster of config/node{1,2,3}.toml.
#   scripts/cluster.sh          build, start all three, wait; Ctrl-C stops all three
#   scripts/cluster.sh stop     stop a cluster started by this script in another terminal
# Logs go to .cluster/nodeN.log, data to data/nodeN (as the config files say).
set -euo pipefail
cd "$(dirname "$0")/.."
PIDS=.cluster/pids

stop() {
  [ -f "$PIDS" ] || return 0
  while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done < "$PIDS"
  while read -r pid; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done < "$PIDS"
  rm -f "$PIDS"
  echo "cluster stopped"
}

if [ "${1:-}" = "stop" ]; then stop; exit 0; fi

cargo build --bins
mkdir -p .cluster
stop
for i in 1 2 3; do
  ./target/debug/distributed_kv --config "config/node$i.toml" >".cluster/node$i.log" 2>&1 &
  echo $! >>"$PIDS"
done
trap 'stop; exit 0' INT TERM
echo "3 nodes running: clients on 127.0.0.1:50051, :50061, :50071 (logs in .cluster/)."
echo "Try: ./target/debug/kvctl status    Stop: Ctrl-C, or scripts/cluster.sh stop"
wait
