#!/usr/bin/env bash
# Renders the real GUI window headless (Xvfb + Mesa's software OpenGL) against a local 3-node
# cluster holding some keys, and writes docs/gui.png. Installs what it needs (Debian packages).
#   scripts/gui-screenshot.sh [OUTPUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-docs/gui.png}"

need=()
command -v xvfb-run >/dev/null || need+=(xvfb xauth)
dpkg -s libgl1-mesa-dri >/dev/null 2>&1 || need+=(libgl1-mesa-dri)
dpkg -s libegl1 >/dev/null 2>&1 || need+=(libegl1)
dpkg -s libgl1 >/dev/null 2>&1 || need+=(libgl1)
dpkg -s libxkbcommon-x11-0 >/dev/null 2>&1 || need+=(libxkbcommon-x11-0)
dpkg -s libxcursor1 >/dev/null 2>&1 || need+=(libxcursor1)
dpkg -s libxi6 >/dev/null 2>&1 || need+=(libxi6)
dpkg -s libxrandr2 >/dev/null 2>&1 || need+=(libxrandr2)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --bins
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A 3-node cluster on free ports (a running local cluster is not disturbed); kvcluster prints
# the client endpoints once every node answers.
: >"$WORK/cluster.out"
./target/debug/kvcluster --dir "$WORK/cluster" >"$WORK/cluster.out" 2>"$WORK/cluster.err" &
PIDS+=($!)
until [ "$(wc -l <"$WORK/cluster.out")" -ge 1 ]; do
  kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$WORK/cluster.err" >&2; exit 1; }
  sleep 0.1
done
ENDPOINTS=$(sed -n 1p "$WORK/cluster.out")
export KV_ENDPOINTS="$ENDPOINTS"
for k in apple banana cherry config/timeout config/retries users/alice users/bob; do
  ./target/debug/kvctl --timeout-ms 20000 set "$k" "value of $k" >/dev/null
done
mkdir -p "$(dirname "$OUT")"
# A fresh config dir, so the screenshot does not depend on (or change) remembered endpoints.
XDG_CONFIG_HOME="$WORK/config" LIBGL_ALWAYS_SOFTWARE=1 \
  xvfb-run -a -s "-screen 0 1280x900x24" ./target/debug/gui --endpoints "$ENDPOINTS" --screenshot "$OUT"
echo "wrote $OUT"
