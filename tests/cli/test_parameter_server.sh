#!/usr/bin/env bash
# examples/distributed_parameter_server_example (gRPC, loopback, ephemeral
# ports, a deadline on every process): one synchronous worker trains the
# weights of `harmonics train` bit for bit; two workers on two shards follow
# data-parallel training of the same global batch within 1e-5; a worker
# killed with SIGKILL after 10 updates and restarted lets training finish
# with the exact update count and the uninterrupted run's weights; a server
# killed and restarted from its checkpoint does too; a model above 4 MiB
# round-trips; asynchronous training reports staleness; an unreachable
# server and a mismatched model are clear errors.
#   test_parameter_server.sh EXAMPLE HARMONICS_CLI [MPIEXEC]
set -u
ps=$1 cli=$2 mpirun=${3:-}
source "$(dirname "$0")/check.sh"
work=$(mktemp -d)
trap 'pkill -9 -f "$work/" 2>/dev/null; rm -rf "$work"' EXIT

/usr/bin/python3 - "$work" <<'PY'
import random, sys
random.seed(6)
d = sys.argv[1]
for name, rows in (("", 203), ("big", 20000), ("tiny", 64)):
    with open(d + "/%sx.csv" % name, "w") as f, open(d + "/%sy.csv" % name, "w") as g:
        for _ in range(rows):
            v = [random.uniform(-1, 1) for _ in range(5)]
            f.write(",".join("%.4f" % a for a in v) + "\n")
            g.write("%.4f\n" % (v[0] * v[1] - 0.5 * v[2]))
PY
printf 'producer x {5}; producer y {1};\nlayer h {8}; layer out;\ncycle { x -(relu)-> h -> out; out <-(mse)- y; }\n' \
  >"$work/net.hmx"
printf 'producer x {5}; producer y {1};\nlayer h {16}; layer out;\ncycle { x -(tanh)-> h -> out; out <-(mse)- y; }\n' \
  >"$work/other.hmx"
# 1100 x 1100 weights: 4.8 MB, above gRPC's 4 MiB message limit.
printf 'producer x {5}; producer y {1};\nlayer h {1100}; layer h2 {1100}; layer out;\ncycle { x -(relu)-> h -(relu)-> h2 -> out; out <-(mse)- y; }\n' \
  >"$work/wide.hmx"
train=(--optimizer adam --lr 0.01 --seed 1 --batch 16)
# The processes run under timeout(1): a kill goes to the process itself, timeout's child.
kill_child() { pkill -9 -P "$1"; }
port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# serve NAME PORT ARGS...: starts a server in the background (pid in $server_pid), waits until it listens.
serve() {
  local name=$1 p=$2; shift 2
  timeout 300 "$ps" server --port "$p" "$@" >"$work/$name.out" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do grep -q 'listening on' "$work/$name.out" 2>/dev/null && return 0; sleep 0.1; done
  check "server $name listens: $(cat "$work/$name.out")" false
}
# worker NAME PORT SHARD MODEL DATA ARGS...: runs a worker in the background (pid in $worker_pid).
worker() {
  local name=$1 p=$2 shard=$3 model=$4 data=$5; shift 5
  timeout 300 "$ps" worker --server "127.0.0.1:$p" --shard "$shard" --model "$model" --data "x=csv:$work/${data}x.csv" \
    --data "y=csv:$work/${data}y.csv" --threads 1 "$@" >"$work/$name.out" 2>&1 &
  worker_pid=$!
}

# One worker, synchronous: bit for bit what `harmonics train` saves.
"$cli" train "$work/net.hmx" --data "x=csv:$work/x.csv" --data "y=csv:$work/y.csv" "${train[@]}" --epochs 3 \
  --threads 1 --save-weights "$work/plain.st" >"$work/plain.out" 2>&1
rc=$?
check "harmonics train trains: $(tail -1 "$work/plain.out")" test "$rc" -eq 0
p=$(port)
serve one "$p" --workers 1 --model "$work/net.hmx" "${train[@]}" --epochs 3 --save-weights "$work/one.st"
worker w1 "$p" 0/1 "$work/net.hmx" ""
wait "$worker_pid"
rc=$?
wait "$server_pid"
rcs=$?
check "one worker finishes: $(cat "$work/w1.out")" test "$rc" -eq 0
check "the server finishes: $(tail -2 "$work/one.out")" test "$rcs" -eq 0
check "the server made 39 updates" grep -q '^server: update 39/39: loss' "$work/one.out"
check "one worker: the server's weights equal harmonics train's, byte for byte" cmp "$work/plain.st" "$work/one.st"

# Two workers on two shards: data-parallel training of the same global batch.
if [ -n "$mpirun" ]; then
  "$mpirun" --allow-run-as-root --oversubscribe -np 2 "$cli" train "$work/net.hmx" --data "x=csv:$work/x.csv" \
    --data "y=csv:$work/y.csv" "${train[@]}" --epochs 3 --threads 1 --save-weights "$work/dp.st" >"$work/dp.out" 2>&1
  rc=$?
  check "mpirun -np 2 harmonics train trains: $(tail -1 "$work/dp.out")" test "$rc" -eq 0
  reference="$work/dp.st"
else
  reference="$work/plain.st" # data parallel follows one process within 1e-5 (tests/mpi)
fi
p=$(port)
serve two "$p" --workers 2 --model "$work/net.hmx" "${train[@]}" --epochs 3 --save-weights "$work/two.st"
worker w2a "$p" 0/2 "$work/net.hmx" ""
a=$worker_pid
worker w2b "$p" 1/2 "$work/net.hmx" ""
wait "$a"
rca=$?
wait "$worker_pid"
rcb=$?
wait "$server_pid"
check "two workers finish: $(cat "$work/w2a.out" "$work/w2b.out")" test "$rca" -eq 0 -a "$rcb" -eq 0
check "two workers: 39 updates with both" grep -q '^server: update 39/39: .*, 2 workers$' "$work/two.out"
weights_within "$reference" "$work/two.st" 1e-5 >"$work/two.cmp"
rc=$?
check "two workers follow data-parallel training: $(cat "$work/two.cmp")" test "$rc" -eq 0

# The uninterrupted two-worker run on more data, the reference of the next two.
long=(--workers 2 --model "$work/net.hmx" "${train[@]}" --epochs 2)
p=$(port)
serve straight "$p" "${long[@]}" --save-weights "$work/straight.st"
worker s0 "$p" 0/2 "$work/net.hmx" big
a=$worker_pid
worker s1 "$p" 1/2 "$work/net.hmx" big
wait "$a" "$worker_pid" "$server_pid"
check "the uninterrupted run makes 2500 updates" grep -q '^server: update 2500/2500' "$work/straight.out"

# A worker killed with SIGKILL after 10 updates, then restarted.
p=$(port)
serve killed "$p" "${long[@]}" --save-weights "$work/killed.st"
worker k0 "$p" 0/2 "$work/net.hmx" big
a=$worker_pid
worker k1 "$p" 1/2 "$work/net.hmx" big
for _ in $(seq 3000); do grep -q '^server: update 10/' "$work/killed.out" && break; sleep 0.01; done
kill_child "$worker_pid"
wait "$worker_pid" 2>/dev/null
for _ in $(seq 100); do grep -q 'left:' "$work/killed.out" && break; sleep 0.05; done
check "the server notices the dead worker: $(grep -m1 'left:' "$work/killed.out")" grep -q 'shard 1) left: ' "$work/killed.out"
sleep 1
worker k1b "$p" 1/2 "$work/net.hmx" big
wait "$a"
rca=$?
wait "$worker_pid"
rcb=$?
wait "$server_pid"
rcs=$?
check "after the restart both workers finish: $(tail -1 "$work/k0.out") $(tail -1 "$work/k1b.out")" \
  test "$rca" -eq 0 -a "$rcb" -eq 0
check "the server never crashed (rc $rcs)" test "$rcs" -eq 0
check "the restarted worker joined again" grep -q 'joined as shard 1/2 at version' "$work/killed.out"
grep -E 'left:|replaces|joined as shard 1/2' "$work/killed.out" # for the log
check "exactly 2500 updates" test "$(grep -c '^server: update ' "$work/killed.out")" -eq 2500
check "the killed and restarted run saves the uninterrupted run's weights" cmp "$work/straight.st" "$work/killed.st"

# --worker-timeout: a shard whose worker is gone is waited for 1 s, then the others go on without it.
p=$(port)
serve timeout "$p" --workers 2 --model "$work/net.hmx" "${train[@]}" --worker-timeout 1
worker t0 "$p" 0/2 "$work/net.hmx" big
a=$worker_pid
worker t1 "$p" 1/2 "$work/net.hmx" big
for _ in $(seq 3000); do grep -q '^server: update 10/' "$work/timeout.out" && break; sleep 0.01; done
kill_child "$worker_pid"
wait "$worker_pid" 2>/dev/null
wait "$a"
rca=$?
wait "$server_pid"
rcs=$?
check "with --worker-timeout one worker finishes alone: $(tail -1 "$work/t0.out")" test "$rca" -eq 0 -a "$rcs" -eq 0
check "... after saying so: $(grep -m1 'going on without' "$work/timeout.out")" \
  grep -q '^server: shard 1 gave no gradient for version [0-9]* within 1.0* s: going on without it$' "$work/timeout.out"
check "... once" test "$(grep -c 'going on without' "$work/timeout.out")" -eq 1
check "... with exactly 1250 updates" test "$(grep -c '^server: update ' "$work/timeout.out")" -eq 1250
check "... the last ones by one worker" grep -q '^server: update 1250/1250: .*, 1 worker$' "$work/timeout.out"
check "workers print their progress" grep -q '^worker shard0-pid[0-9]*: version [0-9]*: loss [0-9.]*, [0-9]* gradients sent$' \
  "$work/t0.out"

# The server killed (it checkpoints every update) and restarted from its checkpoint:
# the workers reconnect and training ends where the uninterrupted run did.
p=$(port)
serve crash "$p" "${long[@]}" --checkpoint "$work/server.hck"
first=$server_pid
worker c0 "$p" 0/2 "$work/net.hmx" big
a=$worker_pid
worker c1 "$p" 1/2 "$work/net.hmx" big
b=$worker_pid
for _ in $(seq 3000); do grep -q '^server: update 20/' "$work/crash.out" && break; sleep 0.01; done
kill_child "$first"
wait "$first" 2>/dev/null
check "the server wrote a checkpoint before it died" test -s "$work/server.hck"
serve resumed "$p" "${long[@]}" --checkpoint "$work/server.hck" --resume "$work/server.hck" --save-weights "$work/resumed.st"
wait "$a"
rca=$?
wait "$b"
rcb=$?
wait "$server_pid"
check "the workers reconnect and finish: $(tail -1 "$work/c0.out") $(tail -1 "$work/c1.out")" \
  test "$rca" -eq 0 -a "$rcb" -eq 0
check "the restarted server resumed: $(head -1 "$work/resumed.out")" grep -q 'resumed at update' "$work/resumed.out"
check "... and finished at update 2500" grep -q '^server: update 2500/2500' "$work/resumed.out"
check "the resumed server saves the uninterrupted run's weights" cmp "$work/straight.st" "$work/resumed.st"

# A model above 4 MiB of parameters.
"$cli" train "$work/wide.hmx" --data "x=csv:$work/tinyx.csv" --data "y=csv:$work/tinyy.csv" "${train[@]}" \
  --threads 1 --save-weights "$work/wide_plain.st" >"$work/wide_plain.out" 2>&1
p=$(port)
serve wide "$p" --workers 1 --model "$work/wide.hmx" "${train[@]}" --save-weights "$work/wide.st"
worker ww "$p" 0/1 "$work/wide.hmx" tiny
wait "$worker_pid"
rc=$?
wait "$server_pid"
check "a model of 4.8 MB trains over gRPC: $(cat "$work/ww.out")" test "$rc" -eq 0
check "... bit for bit" cmp "$work/wide_plain.st" "$work/wide.st"

# Asynchronous: every gradient is applied as it arrives, with its staleness.
p=$(port)
serve async "$p" --workers 2 --model "$work/net.hmx" "${train[@]}" --async
worker a0 "$p" 0/2 "$work/net.hmx" ""
a=$worker_pid
worker a1 "$p" 1/2 "$work/net.hmx" ""
wait "$a" "$worker_pid" "$server_pid"
check "asynchronous training ends after 13 updates: $(tail -2 "$work/async.out")" \
  grep -q '^server: update 13/13: .*staleness' "$work/async.out"
check "... and reports the staleness" grep -q '^server: staleness: mean [0-9.]*, max [0-9]* versions' "$work/async.out"

# Errors: nobody listening; a model that is not the server's.
p=$(port)
timeout 60 "$ps" worker --server "127.0.0.1:$p" --shard 0/1 --model "$work/net.hmx" --data "x=csv:$work/x.csv" \
  --data "y=csv:$work/y.csv" --reconnect 2 >"$work/nobody.out" 2>&1
rc=$?
check "no server: the worker fails (rc $rc)" test "$rc" -eq 1
check "... saying so: $(cat "$work/nobody.out")" grep -q "cannot reach the parameter server at 127.0.0.1:$p within 2 s" \
  "$work/nobody.out"
serve mismatch "$p" --workers 1 --model "$work/net.hmx"
timeout 60 "$ps" worker --server "127.0.0.1:$p" --shard 0/1 --model "$work/other.hmx" --data "x=csv:$work/x.csv" \
  --data "y=csv:$work/y.csv" >"$work/other.out" 2>&1
rc=$?
kill "$server_pid" 2>/dev/null
wait "$server_pid" 2>/dev/null
check "another model: the worker fails (rc $rc)" test "$rc" -eq 1
check "... saying why: $(cat "$work/other.out")" grep -q "refused this worker: model mismatch" "$work/other.out"
timeout 10 "$ps" worker --server 127.0.0.1:1 --shard 2/2 --model "$work/net.hmx" >"$work/usage.out" 2>&1
rc=$?
check "a bad shard is a usage error: $(head -1 "$work/usage.out")" test "$rc" -eq 2
exit "$fail"
