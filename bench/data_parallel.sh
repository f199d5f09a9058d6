#!/usr/bin/env bash
# The data-parallel scaling table: samples/s of -np 1 with 2 threads against
# -np 2 with 1 thread each, at a global batch of 1024, for 784-128-10 and
# 784-1024-1024-10, with the all-reduce's share of each update. Each line is
# the best of 3 runs (the machine is shared and noisy).
#   bench/data_parallel.sh [BUILD_DIR (build)]
set -euo pipefail
build=${1:-build}
bin=$build/bin/bench_data_parallel
# mpirun binds each of up to 2 ranks to one core: right for -np 2 with one
# thread each, but a -np 1 rank with 2 threads on one core runs 5x slower,
# so -np 1 runs with --bind-to none.
mpi=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
rate() { sed -n 's/.*: *\([0-9]*\) samples\/s.*/\1/p' <<<"$1"; }
# best NP THREADS BIND...: the fastest of 3 runs of the current model.
best() {
  local np=$1 threads=$2 top="" line
  shift 2
  for _ in 1 2 3; do
    line=$("${mpi[@]}" "$@" -np "$np" "$bin" "$model" "$threads" "$samples" "$epochs")
    if [ -z "$top" ] || [ "$(rate "$line")" -gt "$(rate "$top")" ]; then top=$line; fi
  done
  echo "$top"
}
for model in 784-128-10 784-1024-1024-10; do
  samples=16384 epochs=8
  [ "$model" = 784-1024-1024-10 ] && samples=8192 epochs=2
  one=$(best 1 2 --bind-to none)
  two=$(best 2 1)
  echo "$one"
  echo "$two"
  awk -v a="$(rate "$one")" -v b="$(rate "$two")" -v m="$model" \
    'BEGIN { printf "%-18s -np 2 / -np 1 = %.2f (goal: at least 0.85)\n\n", m, b / a }'
done
