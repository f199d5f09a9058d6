#!/usr/bin/env bash
# The data-parallel scaling table: samples/s of -np 1 with 2 threads against
# -np 2 with 1 thread each, at a global batch of 1024, for 784-128-10 and
# 784-1024-1024-10, with the all-reduce's share of each update.
#   bench/data_parallel.sh [BUILD_DIR (build)]
set -euo pipefail
build=${1:-build}
bin=$build/bin/bench_data_parallel
# mpirun binds each of up to 2 ranks to one core: right for -np 2 with one
# thread each, but a -np 1 rank with 2 threads on one core runs 5x slower,
# so -np 1 runs with --bind-to none.
mpi=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
for model in 784-128-10 784-1024-1024-10; do
  samples=16384
  [ "$model" = 784-1024-1024-10 ] && samples=8192
  epochs=8
  [ "$model" = 784-1024-1024-10 ] && epochs=2
  one=$("${mpi[@]}" --bind-to none -np 1 "$bin" "$model" 2 "$samples" "$epochs")
  two=$("${mpi[@]}" -np 2 "$bin" "$model" 1 "$samples" "$epochs")
  echo "$one"
  echo "$two"
  r1=$(sed -n 's/.*: *\([0-9]*\) samples\/s.*/\1/p' <<<"$one")
  r2=$(sed -n 's/.*: *\([0-9]*\) samples\/s.*/\1/p' <<<"$two")
  awk -v a="$r1" -v b="$r2" -v m="$model" 'BEGIN { printf "%-18s -np 2 / -np 1 = %.2f (goal: at least 0.85)\n\n", m, b / a }'
done
