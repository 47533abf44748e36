# Shared by the scripts that run a throw-away local cluster. Source it; it needs PIDS (an array)
# and WORK (a scratch directory) to be set by the caller.

# start_kv_cluster BIN_DIR BASE_PORT NAME: starts 3 nodes of BIN_DIR/distributed_kv with client
# ports BASE+1, +11, +21 and peer ports BASE+2, +12, +22, data and logs under $WORK, and sets
# KV_EPS to their client addresses.
start_kv_cluster() {
  local bin="$1" base="$2" name="$3" i
  local cluster="1=127.0.0.1:$((base + 2)),2=127.0.0.1:$((base + 12)),3=127.0.0.1:$((base + 22))"
  KV_EPS="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 11)),127.0.0.1:$((base + 21))"
  for i in 1 2 3; do
    "$bin/distributed_kv" --node-id "$i" --cluster-name "$name" \
      --client-addr "127.0.0.1:$((base + 10 * (i - 1) + 1))" --peer-addr "127.0.0.1:$((base + 10 * (i - 1) + 2))" \
      --initial-cluster "$cluster" --data-dir "$WORK/$name$i" --log-level warn 2>"$WORK/$name$i.log" &
    PIDS+=($!)
  done
}
