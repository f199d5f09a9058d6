#!/usr/bin/env bash
# Regenerates the fuzzers' seed corpus (tests/fuzz/corpus/<target>/) from
# small valid files made with the harmonics program. The outputs are
# committed; run this after a format change.
#   tests/fuzz/make_corpus.sh build/bin/harmonics
set -euo pipefail
bin=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
c=$here/corpus
rm -rf "$c"
mkdir -p "$c"/{dsl,graph,weights,checkpoint,safetensors,idx,csv,config}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp "$root/examples/fashion_mnist.hmx" "$c/dsl/fashion_mnist.hmx"
cat >"$c/dsl/tiny.hmx" <<'X'
producer x {4}; producer t {2}; consumer y; layer h 3/4 x; layer o;
cycle { x -(tanh)-> h -> o | -(relu)-> o; o <-(cross_entropy)- t; o -(softmax)-> y; }
X
printf 'harmonic n { producer a; layer b {2}; layer c; cycle { a -> b;\n -(gelu)-> c; c <-(mse)- a; } }\n' >"$c/dsl/continuation.hmx"

# A tiny model trained on CSV data gives weights, safetensors and a checkpoint.
printf 'a,b,c,d\n0.1,0.2,0.3,0.4\n-1,0.5,2,0\n0,0,0,1\n0.3,-0.2,0.8,0.1\n' >"$work/x.csv"
printf '0\n1\n1\n0\n' >"$work/t.csv"
printf 'producer x {4}; producer t {2}; layer h {3}; layer o; cycle { x -(tanh)-> h -> o; o <-(cross_entropy)- t; }\n' >"$work/m.hmx"
"$bin" train "$work/m.hmx" --data x=csv:"$work/x.csv" --data t=labels:"$work/t.csv" --epochs 2 --batch 2 \
  --optimizer adam --save-weights "$c/safetensors/tiny.safetensors" --checkpoint "$c/checkpoint/tiny.hck" >/dev/null
"$bin" convert "$c/safetensors/tiny.safetensors" "$c/weights/tiny.hnwt" >/dev/null
"$bin" compile "$work/m.hmx" -o "$c/graph/tiny.hgr" >/dev/null
printf 'producer x {4}; producer t {2}; layer h {3}; layer o; partition by layer h;\ncycle { x -(tanh)-> h -> o; o <-(cross_entropy)- t; }\n' >"$c/dsl/partition.hmx"
"$bin" compile "$c/dsl/partition.hmx" -o "$c/graph/partition.hgr" >/dev/null
"$bin" compile "$c/dsl/tiny.hmx" -o "$c/graph/consumer_ratio.hgr" >/dev/null
# Images: every connection kind (.hgr version 3).
cp "$root/tests/data/cnn_full.hmx" "$c/dsl/cnn_full.hmx"
printf 'producer x {2x5x5}; producer t {3}; layer a; layer b; layer m; layer n; layer q; layer d; layer o;\ncycle { x -[conv 4 3x3 padding 1 groups 2 bias off](relu)-> a -[avg_pool 2 stride 1 padding 1]-> b -[dropout 0.5]-> d -> o;\n x -[max_pool 3x3 stride 2]-> m -> o; a -[norm momentum 0.5]-> n -[layer_norm eps 0.01](tanh)-> q -> o; o <-(mse)- t; }\n' >"$c/dsl/windows.hmx"
"$bin" compile "$c/dsl/cnn_full.hmx" -o "$c/graph/cnn_full.hgr" >/dev/null
"$bin" compile "$c/dsl/windows.hmx" -o "$c/graph/windows.hgr" >/dev/null

# IDX: 2 images of 2x3 bytes, 2 labels; raw and gzip'ed.
printf '\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x03\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c' >"$c/idx/images.idx"
printf '\x00\x00\x08\x01\x00\x00\x00\x02\x03\x07' >"$c/idx/labels.idx"
gzip -9 -n -c "$c/idx/images.idx" >"$c/idx/images.idx.gz"

cp "$work/x.csv" "$c/csv/header.csv"
printf '1,2\n3,4\n' >"$c/csv/plain.csv"
printf 'backend = cuda,cpu\nplugin_path = /a:/b\ncpu.threads = 2  # comment\ndebug = loader\n' >"$c/config/harmonics.conf"
find "$c" -type f | sort
