#!/usr/bin/env bash
# examples/pipeline_tcp_transport.c, a user's transport over TCP on
# loopback: two processes train two stages and save the weights of one
# process (cmp against `harmonics train --accumulate 4`); a stage killed
# mid-run makes the other fail at once, naming it.
#   test_pipeline_tcp.sh EXAMPLE HARMONICS_CLI
set -u
example=$1 cli=$2
source "$(dirname "$0")/check.sh"
work=$(mktemp -d)
trap 'pkill -9 -f "$work/" 2>/dev/null; rm -rf "$work"' EXIT

/usr/bin/python3 - "$work" <<'PY'
import random, sys
random.seed(6)
d = sys.argv[1]
for name, rows in (("", 203), ("big", 20000)):
    with open(d + "/%sx.csv" % name, "w") as f, open(d + "/%sy.csv" % name, "w") as g:
        for _ in range(rows):
            v = [random.uniform(-1, 1) for _ in range(5)]
            f.write(",".join("%.4f" % a for a in v) + "\n")
            g.write("%.4f\n" % (v[0] * v[1] - 0.5 * v[2]))
PY
cat >"$work/net.hmx" <<'HMX'
producer x {5}; producer y {1};
layer h {8}; layer out;
cycle { x -(relu)-> h -> out; out <-(mse)- y; }
HMX
port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

"$cli" train "$work/net.hmx" --data "x=csv:$work/x.csv" --data "y=csv:$work/y.csv" --batch 4 --accumulate 4 \
  --optimizer adam --lr 0.01 --seed 1 --epochs 3 --threads 1 --save-weights "$work/single.st" >"$work/single.out" 2>&1
rc=$?
check "one process trains: $(tail -2 "$work/single.out")" test "$rc" -eq 0

p=$(port)
"$example" 0 "$p" "$work/net.hmx" h "$work/x.csv" "$work/y.csv" >"$work/s0.out" 2>&1 &
s0=$!
timeout 120 "$example" 1 "$p" "$work/net.hmx" h "$work/x.csv" "$work/y.csv" "$work/tcp.st" >"$work/s1.out" 2>&1
rc1=$?
wait $s0
rc0=$?
check "stage 0 over TCP trains: $(cat "$work/s0.out")" test "$rc0" -eq 0
check "stage 1 over TCP trains: $(cat "$work/s1.out")" test "$rc1" -eq 0
check "stage 1 reports the updates: $(cat "$work/s1.out")" grep -q '^stage 1: 39 updates, last loss' "$work/s1.out"
check "two processes over TCP save one process's weights, byte for byte" cmp "$work/single.st" "$work/tcp.st"

# Kill one stage mid-run: the other fails at once, naming it.
for victim in 1 0; do
  p=$(port)
  "$example" 0 "$p" "$work/net.hmx" h "$work/bigx.csv" "$work/bigy.csv" - 1000 >"$work/k0.out" 2>&1 &
  s0=$!
  "$example" 1 "$p" "$work/net.hmx" h "$work/bigx.csv" "$work/bigy.csv" - 1000 >"$work/k1.out" 2>&1 &
  s1=$!
  sleep 2
  pids=($s0 $s1)
  kill -9 "${pids[$victim]}"
  survivor=$((1 - victim))
  start=$(date +%s)
  wait "${pids[$survivor]}"
  rc=$?
  elapsed=$(($(date +%s) - start))
  wait "${pids[$victim]}" 2>/dev/null
  check "stage $victim killed: stage $survivor fails (rc $rc)" test "$rc" -ne 0
  check "stage $victim killed: stage $survivor stops within 5 s ($elapsed s)" test "$elapsed" -le 5
  check "stage $victim killed: stage $survivor names it: $(cat "$work/k$survivor.out")" \
    grep -q "pipeline stage $survivor: .*stage $victim closed the connection" "$work/k$survivor.out"
done
exit "$fail"
