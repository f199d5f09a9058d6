#!/usr/bin/env bash
# The CUDA plugin built with the default architectures holds machine code for
# every GPU generation CUDA 13 supports (nvcc records each cubin's ptxas
# command line, "-arch sm_NN", in the fat binary) and PTX for newer ones.
#   test_cuda_architectures.sh PLUGIN.so
set -u
plugin=$1
source "$(dirname "$0")/check.sh"
[[ -f "$plugin" ]] || { echo "the CUDA plugin was not built"; exit 77; }
archs=$(strings -a "$plugin" | sed -n 's/^-arch sm_\([0-9]*\) .*/\1/p' | sort -n | uniq | tr '\n' ' ')
for sm in 75 80 86 89 90 100 110 120; do
  check "machine code for sm_$sm (found: $archs)" grep -qw "$sm" <<<"$archs"
done
exit "$fail"
