#!/usr/bin/env bash
# `harmonics train --pipeline`: K = 2 and 3 stages with M = 1 and 4
# micro-batches save the very weights (cmp) of one process with --batch B/M
# --accumulate M, in one process (threads) and under mpirun (one stage per
# rank); checkpoints resume every stage bit-identically; bad command lines
# name what is wrong; a stage killed or stopped under mpirun fails the job
# within the timeout naming the stage; stage 0 on cpu and stage 1 on opencl
# (PoCL) reach the one-process accuracy on Fashion-MNIST (a subset) within
# 0.5 points.
#   test_pipeline_cli.sh HARMONICS_CLI SOURCE_DIR [MPIEXEC]
set -u
cli=$1 src=$2 mpirun=${3:-}
source "$src/tests/cli/check.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run_mpi() { local np=$1; shift; "$mpirun" --allow-run-as-root --oversubscribe -np "$np" "$@"; }

/usr/bin/python3 - "$work" <<'PY'
import random, sys
random.seed(4)
d = sys.argv[1]
for name, rows in (("", 61), ("big", 4000)):
    with open(d + "/%sx.csv" % name, "w") as f, open(d + "/%sy.csv" % name, "w") as g:
        for _ in range(rows):
            v = [random.random() for _ in range(5)]
            f.write(",".join("%.4f" % a for a in v) + "\n")
            g.write("%d\n" % (int((v[0] + v[1]) * 2) % 3))
PY
cat >"$work/net.hmx" <<'HMX'
harmonic net {
  producer x {5}; producer y {3};
  layer h1 {16}; layer h2 {12}; layer out;
  cycle { x -(relu)-> h1 -(tanh)-> h2 -> out; out <-(cross_entropy)- y; }
}
HMX
common=("$work/net.hmx" --data "x=csv:$work/x.csv" --data "y=labels:$work/y.csv" --epochs 3
  --optimizer adamw --lr 0.01 --weight-decay 0.01 --seed 5 --threads 1)

# One process, the reference: --batch 4 --accumulate M.
for m in 1 4; do
  "$cli" train "${common[@]}" --batch 4 --accumulate "$m" --save-weights "$work/single$m.st" >"$work/single$m.out" 2>&1
  rc=$?
  check "one process, --accumulate $m, trains: $(tail -2 "$work/single$m.out")" test "$rc" -eq 0
done

# In one process (threads): K = 2 and 3, M = 1 and 4.
for cuts in h1 h1,h2; do
  for m in 1 4; do
    out="$work/local-$cuts-$m"
    "$cli" train "${common[@]}" --pipeline "$cuts" --batch $((4 * m)) --micro-batches "$m" --save-weights "$out.st" \
      --json >"$out.out" 2>&1
    rc=$?
    check "--pipeline $cuts --micro-batches $m trains: $(tail -2 "$out.out")" test "$rc" -eq 0
    check "--pipeline $cuts --micro-batches $m saves one process's weights, byte for byte" cmp "$work/single$m.st" "$out.st"
  done
done
check "--json says stages and micro-batches" grep -q '"pipeline":"h1,h2","stages":3,"micro_batches":4' "$work/local-h1,h2-4.out"
check "--json gives the update's batch" grep -q '"batch":16,' "$work/local-h1,h2-4.out"
check "the results name every stage's backend" grep -q '^backend: stage 0 cpu:0, stage 1 cpu:0, stage 2 cpu:0$' \
  "$work/local-h1,h2-4.out"
check "layers carry the whole model's names and their stage" grep -q '^layer h1->h2: f32 (gemm), 32.000 bits per weight (stage 1)$' \
  "$work/local-h1,h2-4.out"

# Checkpoints: every stage writes its own; resuming them all continues exactly.
"$cli" train "${common[@]}" --epochs 1 --pipeline h1,h2 --batch 16 --micro-batches 4 --checkpoint "$work/run.hck" \
  >"$work/half.out" 2>&1
rc=$?
check "a pipeline writes a checkpoint per stage: $(tail -2 "$work/half.out")" \
  test "$rc" -eq 0 -a -s "$work/run.hck.stage0" -a -s "$work/run.hck.stage1" -a -s "$work/run.hck.stage2"
"$cli" train "${common[@]}" --pipeline h1,h2 --resume "$work/run.hck" --save-weights "$work/resumed.st" \
  >"$work/resumed.out" 2>&1
rc=$?
check "--resume continues every stage: $(tail -2 "$work/resumed.out")" test "$rc" -eq 0
check "the resumed pipeline saves the uninterrupted run's weights" cmp "$work/single4.st" "$work/resumed.st"

# A model that declares its partition trains as that pipeline; --pipeline
# none trains it whole; compile writes the stages.
sed 's/^  cycle/  partition by layer h1, h2;\n  cycle/' "$work/net.hmx" >"$work/declared.hmx"
declared=("$work/declared.hmx" "${common[@]:1}")
"$cli" train "${declared[@]}" --batch 16 --micro-batches 4 --save-weights "$work/declared.st" --json >"$work/declared.out" 2>&1
rc=$?
check "a declared partition trains as a pipeline: $(tail -1 "$work/declared.out" | head -c 200)" test "$rc" -eq 0
check "... of the declared cuts" grep -q '"pipeline":"h1,h2","stages":3' "$work/declared.out"
check "... with one process's weights" cmp "$work/single4.st" "$work/declared.st"
"$cli" train "${declared[@]}" --batch 4 --accumulate 4 --pipeline none --save-weights "$work/whole.st" >"$work/whole.out" 2>&1
rc=$?
check "--pipeline none trains the declared model whole: $(tail -1 "$work/whole.out")" test "$rc" -eq 0
check "... as one process" cmp "$work/single4.st" "$work/whole.st"
(cd "$work" && "$cli" compile "$work/declared.hmx" --stages -o "$work/net.hgr" >"$work/compile.out" 2>&1)
rc=$?
check "compile --stages writes every stage: $(cat "$work/compile.out")" \
  test "$rc" -eq 0 -a -s "$work/net.stage0.hgr" -a -s "$work/net.stage1.hgr" -a -s "$work/net.stage2.hgr"
check "... and says what crosses" grep -q '^  boundary1: h2 (12 values) to stage 2$' "$work/compile.out"
"$cli" compile "$work/net.stage2.hgr" -o "$work/again.hgr" >/dev/null 2>&1
rc=$?
check "a stage's graph is an ordinary graph" test "$rc" -eq 0

# Bad command lines.
expect_fail() {
  local want=$1 pattern=$2; shift 2
  "$cli" train "$@" >"$work/bad.out" 2>&1
  local rc=$?
  check "exit $want for '$*' (got $rc)" test "$rc" -eq "$want"
  check "'$*' says: $pattern ($(head -c 300 "$work/bad.out"))" grep -q -e "$pattern" "$work/bad.out"
}
expect_fail 2 "does not split into 3 equal micro-batches" "${common[@]}" --pipeline h1 --batch 16 --micro-batches 3
expect_fail 1 "no layer follows the last cut 'out'" "${common[@]}" --pipeline out
expect_fail 1 "cut 'x' is a producer" "${common[@]}" --pipeline x
expect_fail 1 "already in stage 0, upstream of an earlier cut" "${common[@]}" --pipeline h2,h1
expect_fail 2 "stage 5, but the pipeline has 2 stages" "${common[@]}" --pipeline h1 --stage-backend 5=cpu
expect_fail 2 "not STAGE=BACKEND" "${common[@]}" --pipeline h1 --stage-backend cpu
expect_fail 2 "use --micro-batches, not --accumulate" "${common[@]}" --pipeline h1 --accumulate 2
expect_fail 2 "--micro-batches needs --pipeline" "${common[@]}" --micro-batches 2
expect_fail 1 "pipeline stage 1: .*nosuch" "${common[@]}" --pipeline h1 --stage-backend 1=nosuch

if [ -n "$mpirun" ]; then
  # One stage per rank: the same weights again.
  for cuts in h1 h1,h2; do
    np=$(($(tr -cd , <<<"$cuts" | wc -c) + 2))
    out="$work/mpi-$cuts"
    run_mpi "$np" "$cli" train "${common[@]}" --pipeline "$cuts" --batch 16 --micro-batches 4 --save-weights "$out.st" \
      --json >"$out.out" 2>&1
    rc=$?
    check "mpirun -np $np --pipeline $cuts trains: $(tail -2 "$out.out")" test "$rc" -eq 0
    check "mpirun -np $np --pipeline $cuts saves one process's weights, byte for byte" cmp "$work/single4.st" "$out.st"
    check "only the last stage prints" test "$(grep -c '^backend:' "$out.out")" -eq 1
  done
  run_mpi 3 "$cli" train "${common[@]}" --pipeline h1 >"$work/np.out" 2>&1
  rc=$?
  check "3 ranks for 2 stages fail" test "$rc" -ne 0
  check "... saying so: $(grep -m1 harmonics "$work/np.out")" grep -q "mpirun started 3 processes but --pipeline h1 makes 2 stages" "$work/np.out"

  # A stage killed or stopped mid-run.
  long_job=(env HARMONICS_MPI_TIMEOUT=10 "$mpirun" --allow-run-as-root --oversubscribe -np 2 "$cli" train
    "$work/net.hmx" --data "x=csv:$work/bigx.csv" --data "y=labels:$work/bigy.csv" --epochs 100000 --batch 4
    --micro-batches 2 --pipeline h1 --threads 1)
  disrupt KILL "exited on signal 9" "harmonics train $work/net.hmx" "$work/KILL.out" "${long_job[@]}"
  disrupt STOP "pipeline stage [01]: .*no message from stage [01] \(rank [01]\) within 10 s" \
    "harmonics train $work/net.hmx" "$work/STOP.out" "${long_job[@]}"
else
  echo "no mpirun: the pipeline is not checked across processes"
fi

# Mixed backends on Fashion-MNIST: stage 1 on OpenCL (PoCL, on the CPU here).
data=${HARMONICS_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ -f "$data/train-images-idx3-ubyte.gz" ] && "$cli" plugins 2>/dev/null | grep -q '^opencl .*loaded'; then
  fm=("$src/examples/fashion_mnist.hmx" --dataset fashion-mnist --limit-train 6000 --limit-eval 2000 --epochs 3
    --optimizer adam --lr 0.001 --seed 0 --json)
  "$cli" train "${fm[@]}" --batch 16 --accumulate 4 --backend cpu >"$work/fm1.out" 2>&1
  rc1=$?
  "$cli" train "${fm[@]}" --batch 64 --micro-batches 4 --pipeline hidden --stage-backend 0=cpu,1=opencl \
    >"$work/fm2.out" 2>&1
  rc2=$?
  check "Fashion-MNIST trains in one process and on cpu + opencl stages: $(tail -1 "$work/fm2.out" | head -c 300)" \
    test "$rc1" -eq 0 -a "$rc2" -eq 0
  check "stage 1 ran on OpenCL" grep -q '^backend: stage 0 cpu:0, stage 1 opencl:0$' "$work/fm2.out"
  a1=$(sed -n 's/.*"test_accuracy":\([0-9.]*\).*/\1/p' "$work/fm1.out")
  a2=$(sed -n 's/.*"test_accuracy":\([0-9.]*\).*/\1/p' "$work/fm2.out")
  echo "Fashion-MNIST test accuracy: one process (cpu) $a1, stages cpu + opencl $a2"
  check "cpu + opencl stages reach the one-process accuracy within 0.5 points ($a1 vs $a2)" \
    /usr/bin/python3 -c "import sys; sys.exit(0 if abs(float(sys.argv[1]) - float(sys.argv[2])) <= 0.005 else 1)" \
    "${a1:-0}" "${a2:-1}"
else
  echo "no Fashion-MNIST in $data or no OpenCL device: the mixed-backend pipeline is not checked"
fi
exit "$fail"
