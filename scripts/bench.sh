#!/usr/bin/env bash
# Measures distributed_kv and etcd side by side on this machine, in one run: a local 3-node
# cluster of each, both up for the whole run, and the same kvbench load against one at a time,
# interleaved point by point (distributed_kv, then etcd, then the next point; the reverse order
# in even rounds), every point held for DURATION seconds, the whole sequence ROUNDS times. Each
# line also gives the servers' CPU time per operation (user + system, from /proc, all three
# processes of the store under load).
# Installs etcd-server (Debian's package) if it is missing.
#   scripts/bench.sh                                      put at 1, 64, 256 clients; 15 s; 2 rounds
#   POINTS="put:64 get:64 mixed:64" DURATION=20 scripts/bench.sh
#   POINTS="put:64 put:64:1000/100/0 put:64:0/0/100" scripts/bench.sh   with watchers beside the
#                       load: IDLE/SLOW/FAST (see kvbench --idle-watchers, --slow-watchers, --watchers)
#   KV_VARIANTS="wal=./target/release other=/path/to/release" scripts/bench.sh   compare builds
#   KV_MODES="etcd-api etcd-leader kv" scripts/bench.sh     each distributed_kv variant three ways
#   BENCH_ARGS="--leases 10000 --lease-ttl 10 --leased-keys" POINTS="put:64" DURATION=20 scripts/bench.sh
#                       extra kvbench arguments for every line (here: 10 000 leases expiring mid-run)
# By default both stores are driven through etcd's v3 API by the same client code (kvbench
# --target etcd), each client bound to one member in turn. KV_MODES says how distributed_kv is
# driven, each mode a line of its own at every point: etcd-api (etcd's API, clients spread over
# every member: followers forward writes and serve reads with a read index from the leader),
# etcd-leader (etcd's API, every client on the leader: leader-only reads), kv (kv.v1, clients
# following the leader).
# MEMBER_CPU=40 caps every server process (each member of both stores) at 40 % of one core, in
# a cgroup of its own (cgroup v1 cpu controller, as root), as if each member had a small machine
# of its own: on this 2-core machine the three members otherwise share the same cores, so
# spreading load over them (follower reads) cannot show.
# Data dirs live under the repository's .bench/ (a real disk: /tmp may be a RAM disk, where
# fsync costs nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
POINTS="${POINTS:-put:1 put:64 put:256}"
DURATION="${DURATION:-15}"
ROUNDS="${ROUNDS:-2}"
VALUE="${VALUE:-256}"
KEYS="${KEYS:-10000}"
KV_VARIANTS="${KV_VARIANTS:-distributed_kv=./target/release}"
KV_MODES="${KV_MODES:-etcd-api}"
MEMBER_CPU="${MEMBER_CPU:-}"
# Extra kvbench arguments for every line, e.g. BENCH_ARGS="--leases 100000 --keep-alives 1000".
read -r -a BENCH_ARGS <<<"${BENCH_ARGS:-}"
CGROUP_CPU=/sys/fs/cgroup/cpu
CGROUPS=()

if ! command -v etcd >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  # Debian starts a system etcd on the default ports; the benchmark uses its own.
  $SUDO systemctl stop etcd 2>/dev/null || $SUDO pkill -x etcd 2>/dev/null || true
fi
cargo build --release --bin distributed_kv --bin kvbench --bin kvctl --bin kvcluster

mkdir -p .bench
WORK=$(mktemp -d "$PWD/.bench/run.XXXXXX")
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  PIDS=()
}
remove_cgroups() {
  for g in "${CGROUPS[@]}"; do rmdir "$g" 2>/dev/null || true; done
}
trap 'stop_all; remove_cgroups; rm -rf "$WORK"' EXIT
# Puts each of the comma-separated pids $2 in a cpu cgroup of its own, named after $1, capped at
# MEMBER_CPU % of one core.
cap_members() {
  local i=0 p g
  for p in ${2//,/ }; do
    i=$((i + 1)); g="$CGROUP_CPU/kvbench-$$-$1-$i"
    mkdir -p "$g"; CGROUPS+=("$g")
    echo 100000 >"$g/cpu.cfs_period_us"
    echo $((MEMBER_CPU * 1000)) >"$g/cpu.cfs_quota_us"
    echo "$p" >"$g/cgroup.procs"
  done
}
if [ -n "$MEMBER_CPU" ] && [ ! -w "$CGROUP_CPU" ]; then
  echo "MEMBER_CPU needs root and the cgroup v1 cpu controller at $CGROUP_CPU" >&2; exit 2
fi
BENCH="./target/release/kvbench --value-size $VALUE --keys $KEYS --duration-secs $DURATION"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(etcd --version | head -1)"
echo "points: $POINTS; $DURATION s each; $ROUNDS rounds; $VALUE-byte values over $KEYS keys; distributed_kv modes: $KV_MODES${BENCH_ARGS[*]:+; kvbench also given: ${BENCH_ARGS[*]}}${MEMBER_CPU:+; every member capped at $MEMBER_CPU % of a core}"

# distributed_kv variants: each a kvcluster of 3 nodes on free ports, data and logs in $WORK/<name>.
# kvcluster prints the client endpoints, then the nodes' pids, once every node answers.
declare -A EPS SERVER_PIDS
NAMES=()
for variant in $KV_VARIANTS; do
  name="${variant%%=*}"; bin="${variant#*=}"
  : >"$WORK/$name.out"
  ./target/release/kvcluster --dir "$WORK/$name" --node-binary "$bin/distributed_kv" \
    >"$WORK/$name.out" 2>"$WORK/$name.err" &
  pid=$!
  PIDS+=("$pid")
  until [ "$(wc -l <"$WORK/$name.out")" -ge 2 ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.err" >&2; exit 1; }
    sleep 0.1
  done
  EPS[$name]=$(sed -n 1p "$WORK/$name.out")
  SERVER_PIDS[$name]=$(sed -n 2p "$WORK/$name.out")
  NAMES+=("$name")
  ./target/release/kvctl --endpoints "${EPS[$name]}" --timeout-ms 20000 set warmup 1 >/dev/null
done

# etcd: ports 47101.., data in $WORK.
BASE=47100
INITIAL="e1=http://127.0.0.1:$((BASE + 2)),e2=http://127.0.0.1:$((BASE + 12)),e3=http://127.0.0.1:$((BASE + 22))"
EPS[etcd]="127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 11)),127.0.0.1:$((BASE + 21))"
before=${#PIDS[@]}
for i in 1 2 3; do
  c="http://127.0.0.1:$((BASE + 10 * (i - 1) + 1))"; p="http://127.0.0.1:$((BASE + 10 * (i - 1) + 2))"
  etcd --name "e$i" --data-dir "$WORK/etcd$i" --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "$INITIAL" \
    --initial-cluster-state new --log-level error 2>"$WORK/etcd$i.log" &
  PIDS+=($!)
done
SERVER_PIDS[etcd]=$(IFS=,; echo "${PIDS[*]:$before}")
NAMES+=(etcd)
# Wait until the etcd cluster accepts a write.
for _ in $(seq 1 100); do
  if ./target/release/kvbench --target etcd --endpoints "${EPS[etcd]}" --clients 1 --ops 1 --workload put 2>/dev/null | grep -q "errors=0"; then break; fi
  sleep 0.2
done

if [ -n "$MEMBER_CPU" ]; then
  for name in "${NAMES[@]}"; do cap_members "$name" "${SERVER_PIDS[$name]}"; done
fi

# The client address of the leader of the distributed_kv cluster at endpoints $1.
leader_of() {
  ./target/release/kvctl --endpoints "$1" status --json | python3 -c '
import json, sys
nodes = json.load(sys.stdin)
print(next(n["client_addr"] for n in nodes if n.get("role") == "leader"))'
}

# Every line of a point, as store:mode.
LINES=()
for name in "${NAMES[@]}"; do
  if [ "$name" = etcd ]; then modes=etcd; else modes=$KV_MODES; fi
  for mode in $modes; do LINES+=("$name:$mode"); done
done
# The lines of a point run in this order in odd rounds and in the reverse order in even ones:
# whatever a point leaves running behind it (a snapshot build after many puts, physical
# compaction) then slows the first line of the next point in one round and the last in the
# other, not the same line every time. The points too run in reverse order in even rounds:
# stores slow down as their data grows over a run, which would otherwise favour the first
# point of every round over the last.
for round in $(seq 1 "$ROUNDS"); do
  order=("${LINES[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=(); for ((i = ${#LINES[@]} - 1; i >= 0; i--)); do order+=("${LINES[$i]}"); done
  fi
  points=($POINTS)
  if [ $((round % 2)) = 0 ]; then
    points=(); for p in $POINTS; do points=("$p" "${points[@]}"); done
  fi
  for point in "${points[@]}"; do
    # workload:clients, or workload:clients:IDLE/SLOW/FAST with watchers beside the load.
    workload="${point%%:*}"; rest="${point#*:}"; clients="${rest%%:*}"; watch_args=()
    if [ "$rest" != "$clients" ]; then
      IFS=/ read -r w_idle w_slow w_fast <<<"${rest#*:}"
      watch_args=(--idle-watchers "$w_idle" --slow-watchers "$w_slow" --watchers "$w_fast")
    fi
    for line in "${order[@]}"; do
      name="${line%%:*}"; mode="${line#*:}"
      {
        case "$mode" in
          etcd|etcd-api) target=etcd; eps="${EPS[$name]}" ;;
          etcd-leader) target=etcd; eps=$(leader_of "${EPS[$name]}") ;;
          kv) target=kv; eps="${EPS[$name]}" ;;
          *) echo "unknown mode $mode in KV_MODES" >&2; exit 2 ;;
        esac
        printf 'round=%s store=%s mode=%s ' "$round" "$name" "$mode"
        $BENCH --target "$target" --endpoints "$eps" --server-pids "${SERVER_PIDS[$name]}" \
          --clients "$clients" --workload "$workload" "${watch_args[@]}" "${BENCH_ARGS[@]}"
      }
    done
  done
done
for name in "${NAMES[@]}"; do
  if [ "$name" = etcd ]; then d="$WORK/etcd1"; else d="$WORK/$name/data1"; fi
  echo "data dir of $name member 1 after the run: $(du -sh "$d" | cut -f1); memory (RSS) of its 3 processes: $(ps -o rss= -p "${SERVER_PIDS[$name]}" | awk '{s+=$1} END {printf "%.0f MiB", s/1024}')"
done
