#!/usr/bin/env bash
# The seed's visualizer block, verbatim (127.0.0.1, port 8080, /metrics),
# streaming to a real `harmonics dashboard` started with its defaults on
# 8080: every update's frame must arrive (counted by a browser client of the
# dashboard, which replays its history).
#   test_seed_visualizer.sh HARMONICS_CLI SEED_SNIPPETS SOURCE_DIR
# Exit 77 when port 8080 is taken, or without node, node-ws or Fashion-MNIST.
set -u
cli=$1 snippets=$2 src=$3
source "$src/tests/cli/check.sh"
command -v node >/dev/null || { echo "skipped: no node"; exit 77; }
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  echo "skipped: port 8080 is taken"
  exit 77
fi
tmp=$(mktemp -d)
"$cli" dashboard >"$tmp/dashboard.log" 2>&1 &
dash=$!
trap 'kill $dash 2>/dev/null; wait $dash 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
  kill -0 $dash 2>/dev/null || break
  sleep 0.1
done
if ! (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  cat "$tmp/dashboard.log"
  if grep -q "in use" "$tmp/dashboard.log"; then echo "skipped: port 8080 is taken"; exit 77; fi
  echo "FAIL: the dashboard did not start"; exit 1
fi
"$snippets" visualizer >"$tmp/out" 2>&1
rc=$?
cat "$tmp/out"
[ $rc -eq 77 ] && exit 77
check "the visualizer block runs" test $rc -eq 0
steps=$(sed -n 's/^steps \([0-9]*\)$/\1/p' "$tmp/out")
node "$src/tests/cpp/count_frames.js" 8080 >"$tmp/frames" 2>&1
rc=$?
cat "$tmp/frames"
[ $rc -eq 77 ] && exit 77
check "every update reached the dashboard" grep -qx "frames $steps last-step $steps" "$tmp/frames"
exit "$fail"
