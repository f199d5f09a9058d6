#!/usr/bin/env bash
# `mpirun -np N harmonics train ...` (oversubscribed, as root when root):
# -np 1 saves the very weights of a plain run; -np 2 and -np 3 report the
# ranks and follow the plain run; a resumed -np 2 run equals the
# uninterrupted one; a rank killed or stopped mid-run fails the
# job within the timeout instead of hanging; Fashion-MNIST (the first 20000 training
# images, 5 epochs) under -np 2 reaches the plain run's accuracy within 0.3
# points.
#   test_distributed_cli.sh HARMONICS_CLI SOURCE_DIR MPIEXEC
set -u
cli=$1 src=$2 mpirun=$3
source "$src/tests/cli/check.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run_mpi() { local np=$1; shift; "$mpirun" --allow-run-as-root --oversubscribe -np "$np" "$@"; }

/usr/bin/python3 - "$work" <<'PY'
import random, sys
random.seed(1)
d = sys.argv[1]
with open(d + "/x.csv", "w") as f, open(d + "/y.csv", "w") as g:
    for _ in range(53):
        v = [random.random() for _ in range(4)]
        f.write(",".join("%.4f" % a for a in v) + "\n")
        g.write("%d\n" % (int(v[0] * 3) % 3))
PY
cat >"$work/net.hmx" <<'HMX'
harmonic net {
  producer x {4}; producer y {3};
  layer h {16}; layer out;
  cycle { x -(relu)-> h -> out; out <-(cross_entropy)- y; }
}
HMX
args=("$work/net.hmx" --data "x=csv:$work/x.csv" --data "y=labels:$work/y.csv" --epochs 4 --batch 10
  --optimizer adam --lr 0.01 --seed 3 --threads 1)

"$cli" train "${args[@]}" --save-weights "$work/plain.st" --json >"$work/plain.out" 2>&1
rc=$?
check "the plain run trains: $(tail -2 "$work/plain.out")" test "$rc" -eq 0
run_mpi 1 "$cli" train "${args[@]}" --save-weights "$work/np1.st" --json >"$work/np1.out" 2>&1
rc=$?
check "mpirun -np 1 trains: $(tail -2 "$work/np1.out")" test "$rc" -eq 0
check "-np 1 saves the plain run's weights, byte for byte" cmp "$work/plain.st" "$work/np1.st"
check "-np 1 reports one rank" grep -q '"ranks":1' "$work/np1.out"

for np in 2 3; do
  run_mpi "$np" "$cli" train "${args[@]}" --save-weights "$work/np$np.st" --json >"$work/np$np.out" 2>&1
  rc=$?
  check "mpirun -np $np trains: $(tail -3 "$work/np$np.out")" test "$rc" -eq 0
  check "-np $np reports $np ranks in --json, once (rank 0)" test "$(grep -c "\"ranks\":$np" "$work/np$np.out")" -eq 1
  check "-np $np prints its results once" test "$(grep -c '^backend:' "$work/np$np.out")" -eq 1
  weights_within "$work/plain.st" "$work/np$np.st" 1e-5 >"$work/cmp$np" 2>&1
  rc=$?
  check "-np $np follows the plain run: $(cat "$work/cmp$np")" test "$rc" -eq 0
done

# Resume under -np 2 (rank 0 reads the checkpoint and broadcasts it) equals
# the uninterrupted -np 2 run.
half=("${args[@]}")
half[${#half[@]}]=--epochs; half[${#half[@]}]=2
run_mpi 2 "$cli" train "${half[@]}" --checkpoint "$work/half.hck" >"$work/half.out" 2>&1
rc=$?
check "-np 2 writes a checkpoint after 2 epochs: $(tail -2 "$work/half.out")" test "$rc" -eq 0 -a -s "$work/half.hck"
run_mpi 2 "$cli" train "${args[@]}" --resume "$work/half.hck" --save-weights "$work/resumed.st" >"$work/resumed.out" 2>&1
rc=$?
check "-np 2 resumes it to 4 epochs: $(tail -2 "$work/resumed.out")" test "$rc" -eq 0
check "the resumed -np 2 run saves the uninterrupted one's weights" cmp "$work/np2.st" "$work/resumed.st"
check "it says once where it resumed" test "$(grep -c '^harmonics: resuming' "$work/resumed.out")" -eq 1

# A rank killed or stopped mid-run.
/usr/bin/python3 - "$work" <<'PY'
import random, sys
random.seed(2)
with open(sys.argv[1] + "/big.csv", "w") as f, open(sys.argv[1] + "/bigy.csv", "w") as g:
    for _ in range(4000):
        v = [random.random() for _ in range(4)]
        f.write(",".join("%.4f" % a for a in v) + "\n")
        g.write("%d\n" % (int(v[0] * 3) % 3))
PY
long_job=(env HARMONICS_MPI_TIMEOUT=10 "$mpirun" --allow-run-as-root --oversubscribe -np 2 "$cli" train "$work/net.hmx"
  --data "x=csv:$work/big.csv" --data "y=labels:$work/bigy.csv" --epochs 100000 --batch 2 --threads 1)
disrupt KILL "exited on signal 9" "harmonics train $work/net.hmx" "$work/KILL.out" "${long_job[@]}"
disrupt STOP "no answer from the other ranks within 10 s" "harmonics train $work/net.hmx" "$work/STOP.out" "${long_job[@]}"

# Fashion-MNIST under -np 2 reaches the plain run's accuracy.
data=${HARMONICS_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ -f "$data/train-images-idx3-ubyte.gz" ]; then
  fm=("$src/examples/fashion_mnist.hmx" --dataset fashion-mnist --limit-train 20000 --epochs 5 --optimizer adam
    --lr 0.001 --batch 64 --seed 0 --json)
  "$cli" train "${fm[@]}" --threads 2 >"$work/fm1.out" 2>&1
  rc1=$?
  run_mpi 2 "$cli" train "${fm[@]}" --threads 1 >"$work/fm2.out" 2>&1
  rc2=$?
  check "Fashion-MNIST trains in one process and on 2 ranks" test "$rc1" -eq 0 -a "$rc2" -eq 0
  a1=$(sed -n 's/.*"test_accuracy":\([0-9.]*\).*/\1/p' "$work/fm1.out")
  a2=$(sed -n 's/.*"test_accuracy":\([0-9.]*\).*/\1/p' "$work/fm2.out")
  echo "Fashion-MNIST test accuracy: one process $a1, 2 ranks $a2"
  check "2 ranks reach the one-process accuracy within 0.3 points ($a1 vs $a2)" \
    /usr/bin/python3 -c "import sys; sys.exit(0 if abs(float(sys.argv[1]) - float(sys.argv[2])) <= 0.003 else 1)" \
    "${a1:-0}" "${a2:-1}"
else
  echo "no Fashion-MNIST in $data: its data-parallel run is not checked"
fi
exit "$fail"
