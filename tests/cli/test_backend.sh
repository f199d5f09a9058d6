#!/usr/bin/env bash
# A GPU backend plugin end to end: it loads (or the test skips with 77 when
# its driver is absent), `harmonics conform` finds it conformant, it trains a
# Fashion-MNIST subset to the CPU plugin's accuracy within 0.5 points, and
# under --policy bits:3 it runs int3_matmul on that device.
#   test_backend.sh HARMONICS_BINARY SOURCE_DIR BACKEND PLUGIN.so [CONFIG_LINE...]
# Config lines "BACKEND.KEY = VALUE" are device options: training gets them
# in a config file, conform as --device-option KEY=VALUE.
set -u
bin=$1
src=$2
backend=$3
plugin=$4
shift 4
extra=("$@")
conform_options=()
for line in "${extra[@]}"; do
  if [[ "$line" =~ ^$backend\.([a-z_]+)\ *=\ *([^ ]+)$ ]]; then
    conform_options+=(--device-option "${BASH_REMATCH[1]}=${BASH_REMATCH[2]}")
  fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/check.sh"
if [[ ! -f "$plugin" ]]; then echo "the $backend plugin was not built"; exit 77; fi
"$bin" plugins --json >"$work/plugins.json" 2>&1
loaded=$(python3 - "$work/plugins.json" "$backend" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for p in j["plugins"]:
    if p.get("name") == sys.argv[2] or p["path"].endswith("hm_%s.so" % sys.argv[2]):
        print("yes" if p.get("loaded") and p.get("devices") else "no: " + str(p.get("error", p.get("reason", "no devices"))))
        break
else:
    print("no: not found")
PY
)
if [[ "$loaded" != yes ]]; then echo "$backend is not available here ($loaded)"; exit 77; fi
# The device line names a vendor and never claims 0 compute units.
dev_line=$("$bin" plugins 2>&1 | grep "^  device $backend:0:")
check "the $backend device line names its vendor: $dev_line" test -z "$(grep -E "vendor vendor|, 0 compute units" <<<"$dev_line")"
if [[ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz && -z "${HARMONICS_FASHION_MNIST_DIR:-}" ]]; then
  echo "Fashion-MNIST is not installed"; exit 77
fi

"$bin" conform "$plugin" "${conform_options[@]}" --json >"$work/conform.json" 2>"$work/conform.txt"
rc=$?
check "harmonics conform finds $backend conformant: $(tail -3 "$work/conform.txt")" test "$rc" -eq 0
check "packed kernels pass" python3 - "$work/conform.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
names = {r["name"]: r["status"] for r in j["results"]}
for q in ["kernel.int3_matmul.64x128x784", "kernel.quantize.q3.17x200", "kernel.dequantize.q4.3x70", "program.mlp_training_step"]:
    assert names.get(q) == "PASS", (q, names.get(q))
assert j["totals"]["FAIL"] == 0 and j["totals"]["PASS"] > 250, j["totals"]
PY
check "conform ran with the device options (${conform_options[*]})" test "$(grep -c '^device option ' "$work/conform.txt")" -eq $((${#conform_options[@]} / 2))
if [[ "$backend" == vulkan && ${#conform_options[@]} -eq 0 ]]; then
  # The GEMMs that take gemm_sg on a device with subgroup shuffles, as gemm_x4.
  "$bin" conform "$plugin" --device-option subgroups=off --test 'kernel.gemm.f32*' >"$work/conform_nosg.txt" 2>&1
  rc=$?
  check "the GEMMs conform with subgroups=off: $(tail -3 "$work/conform_nosg.txt")" test "$rc" -eq 0
  check "subgroups=off ran the GEMM cases" grep -Eq "^kernel.gemm +[1-9][0-9]+ +0 " "$work/conform_nosg.txt"
fi

config=()
if [[ ${#extra[@]} -gt 0 ]]; then printf '%s\n' "${extra[@]}" >"$work/h.conf"; config=(--config "$work/h.conf"); fi
common=(--dataset fashion-mnist --limit-train 4000 --limit-eval 2000 --epochs 2 --optimizer adam --lr 0.001 --batch 64 --seed 3 --json)
acc() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["test_accuracy"])'; }
# like_cpu NAME MODEL MIN ARGS...: MODEL trains on the backend to the CPU's
# accuracy within 0.5 points (and above MIN); the backend's JSON is in $dev_out.
like_cpu() {
  local name=$1 model=$2 min=$3
  shift 3
  local cpu dev rc
  cpu=$("$bin" train "$model" "$@" --backend cpu 2>"$work/err" | acc)
  dev_out=$("$bin" train "$model" "$@" --backend "$backend" "${config[@]}" 2>"$work/err")
  rc=$?
  check "$name: training on $backend exits 0: $(tail -3 "$work/err")" test "$rc" -eq 0
  dev=$(acc <<<"$dev_out")
  echo "$name accuracy on the subset: cpu $cpu, $backend $dev"
  check "$name: $backend is within 0.5 points of the CPU ($dev vs $cpu)" \
    python3 -c "import sys; a, b, m = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 0.005 and a > m else 1)" "$dev" "$cpu" "$min"
}
like_cpu mlp "$src/examples/fashion_mnist.hmx" 0.7 "${common[@]}"
check "the run says which backend" grep -q "\"backend\":\"$backend:0\"" <<<"$dev_out"

q=$("$bin" train "$src/examples/fashion_mnist.hmx" --dataset fashion-mnist --limit-train 2000 --limit-eval 500 --epochs 1 \
     --optimizer adam --lr 0.002 --batch 64 --backend "$backend" "${config[@]}" --policy bits:3 2>"$work/err")
rc=$?
check "bits:3 on $backend exits 0: $(tail -3 "$work/err")" test "$rc" -eq 0
check "bits:3 runs int3_matmul on $backend" grep -q "^layer pixels->hidden: int3 (int3_matmul), 3.449 bits per weight$" <<<"$q"

# Images: a small CNN (convolution, max and average pooling with padding,
# dropout), one with batch norm and one with layer norm train to the CPU's
# accuracy.
cnn=(--dataset fashion-mnist --limit-train 2000 --limit-eval 1000 --epochs 2 --optimizer adam --lr 0.002 --batch 50 --seed 3 --json)
for m in small_cnn small_cnn_norm small_layer_norm; do like_cpu "$m" "$src/tests/data/$m.hmx" 0.6 "${cnn[@]}"; done
# A packed convolution (IM2COL, int4 patches packed image by image: 169 rows
# of 34 bytes end off a 4-byte boundary).
like_cpu small_cnn_int4 "$src/tests/data/small_cnn.hmx" 0.6 "${cnn[@]}" --policy bits:4
check "small_cnn at bits:4 on $backend runs int4_matmul for its convolution" grep -q '"kernel":"int4_matmul"' <<<"$dev_out"

# Device option profile=on (Vulkan, OpenCL): the training step's 13 launches
# (16 ops: the forward GEMM takes its bias and relu, the output layer's its
# bias, the backward GEMM into the hidden layer the relu gradient; the
# gradient norm is two launches), each named, when the program is freed; a
# value other than on/off is refused by name.
if [[ "$backend" == vulkan || "$backend" == opencl ]]; then
  printf '%s\n' "${extra[@]}" "$backend.profile = on" >"$work/p.conf"
  "$bin" train "$src/examples/fashion_mnist.hmx" --dataset fashion-mnist --limit-train 640 --limit-eval 100 --epochs 1 \
    --optimizer adam --batch 64 --backend "$backend" --config "$work/p.conf" >/dev/null 2>"$work/prof"
  rc=$?
  check "profile=on trains on $backend: $(tail -3 "$work/prof")" test "$rc" -eq 0
  # Vulkan records barriers only where a launch needs what one before wrote
  # (gather the labels, the bias gradients and Adam need none).
  launches="13 launches"
  if [[ "$backend" == vulkan ]]; then launches="13 launches and 7 barriers between them"; fi
  check "the $backend profile of the training step has $launches: $(grep -m1 'profile:' "$work/prof")" \
    grep -q "^$backend profile: .*, $launches, mean of 9 runs: " "$work/prof"
  rows=$(awk -v p="$backend profile:" 'index($0, p) == 1 && / launches[ ,]/ {n++} n == 1 && $3 ~ /^[0-9]+$/' "$work/prof")
  check "the 13 rows name gather, gemm_sg, gemm_x8 or gemm_dot, sum_squares and adam: $rows" python3 - "$rows" "$backend" <<'PY'
import sys
rows = [r.split() for r in sys.argv[1].splitlines()]
assert len(rows) == 13, len(rows)
kernels = [r[5] for r in rows]
assert kernels[0] == "gather" and kernels[-1] == "adam" and kernels.count("sum_squares") == 2, kernels
# the forward GEMM (C = X Wᵀ, k = 784) with bias and relu: 4x4 blocks whose
# subgroups share A on lavapipe (gemm_x8 with storage operands), dot products
# of rows on PoCL
assert kernels[2] in {"vulkan": ("gemm_sg", "gemm_x8"), "opencl": ("gemm_dot",)}[sys.argv[2]] and rows[2][6] == "3", rows[2]
assert any(r[5].startswith("gemm") and r[6] == "33" for r in rows), rows  # a GEMM with the relu gradient
assert all(float(r[7]) > 0 for r in rows), rows
PY
  printf '%s\n' "$backend.profile = maybe" >"$work/bad.conf"
  "$bin" train "$src/examples/fashion_mnist.hmx" --dataset fashion-mnist --limit-train 64 --epochs 1 --batch 64 \
    --backend "$backend" --config "$work/bad.conf" >/dev/null 2>"$work/bad"
  rc=$?
  check "profile=maybe is refused: $(tail -2 "$work/bad")" test "$rc" -ne 0
  check "the refusal names the option and its values" \
    grep -q "bad device option profile='maybe'.*profile=off|on" "$work/bad"
fi

exit $fail
