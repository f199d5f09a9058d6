#!/usr/bin/env bash
# End-to-end checks of `harmonics train` and `harmonics infer` on a small
# Fashion-MNIST subset: JSON fields, per-epoch lines without a terminal,
# save/load of weights, and the errors a user meets first.
#   test_train_cli.sh HARMONICS_BINARY SOURCE_DIR
set -u
bin=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/check.sh"
if [[ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz && -z "${HARMONICS_FASHION_MNIST_DIR:-}" ]]; then
  echo "Fashion-MNIST is not installed (scripts/install-deps installs dataset-fashion-mnist)"
  exit 77
fi
model=$src/examples/fashion_mnist.hmx

out=$("$bin" train "$model" --dataset fashion-mnist --limit-train 3000 --limit-eval 1000 --epochs 2 \
      --optimizer adam --lr 0.002 --batch 32 --seed 1 --threads 1 --save-weights "$work/w.safetensors" --json 2>"$work/err")
rc=$?
check "train exits 0 (rc=$rc): $(cat "$work/err")" test $rc -eq 0
check "one line per epoch without a terminal, with the epoch's mean loss" \
  grep -q "^epoch 2/2: mean loss [0-9.]*, test loss [0-9.]*, test accuracy [0-9.]*%" <<<"$out"
json=$(tail -n 1 <<<"$out")
check "JSON fields" python3 - "$json" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
for k in ["test_accuracy", "final_loss", "epochs", "steps", "train_samples_per_s", "backend", "policy"]:
    assert k in j, k
assert j["epochs"] == 2 and j["steps"] == 2 * 94, j
assert 0.6 < j["test_accuracy"] <= 1.0, j
assert j["train_samples_per_s"] > 0 and j["backend"] == "cpu:0" and j["policy"] == "hardware", j
assert j["layers"][0] == {"layer": "pixels->hidden", "precision": "f32", "kernel": "gemm", "note": "",
                          "weight_bytes": 784 * 128 * 4, "weight_count": 784 * 128, "bits_per_weight": 32}, j
# The u8 pixels and i32 labels of 3000 + 1000 samples and the evaluation's
# 1000-row f32 pixel batch are on the device; the rest (weights, Adam state,
# the other 1000-row activations) is under 3 MB.
data = (3000 + 1000) * (784 + 4) + 1000 * 784 * 4
assert data < j["peak_device_bytes"] < data + 3000000, j
PY
acc=$(python3 -c 'import json,sys; print("%.2f" % (100*json.loads(sys.argv[1])["test_accuracy"]))' "$json")

inf=$("$bin" infer "$model" --weights "$work/w.safetensors" --dataset fashion-mnist --limit 1000 2>&1)
check "infer reproduces the training run's accuracy ($acc%): $inf" grep -q "accuracy: $acc% (1000 samples)" <<<"$inf"

"$bin" train "$model" --dataset fashion-mnist --limit-train 500 --limit-eval 200 --init-weights "$work/w.safetensors" \
  --epochs 1 --optimizer sgd --lr 0.01 >/dev/null 2>&1
rc=$?
check "--init-weights continues from saved weights" test "$rc" -eq 0

# Checkpoint after one epoch, resume to two: the same bytes as two epochs at once.
common=(--dataset fashion-mnist --limit-train 2000 --limit-eval 500 --optimizer adamw --lr 0.002 --batch 50 --seed 4 --threads 2)
"$bin" train "$model" "${common[@]}" --epochs 2 --save-weights "$work/straight.safetensors" >/dev/null 2>&1
"$bin" train "$model" "${common[@]}" --epochs 1 --checkpoint "$work/ck.hck" --checkpoint-every 7 >/dev/null 2>&1
"$bin" train "$model" --dataset fashion-mnist --limit-train 2000 --limit-eval 500 --threads 2 --epochs 2 \
  --resume "$work/ck.hck" --save-weights "$work/resumed.safetensors" >/dev/null 2>"$work/resume.err"
check "resume reports where it continues: $(cat "$work/resume.err")" grep -q "resuming .*ck.hck at epoch 1, step 40" "$work/resume.err"
check "resumed training is bit-identical" cmp -s "$work/straight.safetensors" "$work/resumed.safetensors"
# The same with accumulate 3 (each epoch of 40 micro-batches ends in a partial group): 28 updates either way.
acc=(--dataset fashion-mnist --limit-train 2000 --limit-eval 200 --optimizer adam --lr 0.001 --batch 50 --accumulate 3 --seed 0 --threads 2)
"$bin" train "$model" "${acc[@]}" --epochs 2 --save-weights "$work/acc2.safetensors" --json >"$work/acc2.json" 2>/dev/null
"$bin" train "$model" "${acc[@]}" --epochs 1 --checkpoint "$work/acc.hck" >/dev/null 2>&1
"$bin" train "$model" --dataset fashion-mnist --limit-train 2000 --limit-eval 200 --threads 2 --epochs 2 \
  --resume "$work/acc.hck" --save-weights "$work/acc1.safetensors" --json >"$work/acc1.json" 2>/dev/null
check "accumulate 3: 28 updates straight" grep -q '"steps":28,' "$work/acc2.json"
check "accumulate 3: 28 updates resumed" grep -q '"steps":28,' "$work/acc1.json"
check "accumulate 3: resumed training is bit-identical" cmp -s "$work/acc2.safetensors" "$work/acc1.safetensors"
"$bin" convert "$work/straight.safetensors" "$work/w.hnwt" >/dev/null && "$bin" convert "$work/w.hnwt" "$work/back.safetensors" >/dev/null
check "safetensors -> hnwt -> safetensors keeps the bytes" cmp -s "$work/straight.safetensors" "$work/back.safetensors"
"$bin" compile "$model" -o "$work/m.hgr" >/dev/null
check "compile writes a graph" test -s "$work/m.hgr"
head -c 100 "$work/ck.hck" >"$work/cut.hck"
msg=$("$bin" train "$model" --dataset fashion-mnist --limit-train 100 --resume "$work/cut.hck" 2>&1)
check "a truncated checkpoint is refused by name: $msg" grep -q "cut.hck: .*truncated" <<<"$msg"

msg=$(HARMONICS_FASHION_MNIST_DIR=/nonexistent "$bin" train "$model" --dataset fashion-mnist 2>&1)
rc=$?
check "missing dataset files exit 1" test "$rc" -eq 1
check "missing dataset names the file: $msg" grep -q "/nonexistent/train-images-idx3-ubyte.gz" <<<"$msg"

printf 'producer x {4};\nlayer y\n' >"$work/bad.hmx"
msg=$("$bin" train "$work/bad.hmx" 2>&1)
rc=$?
check "bad model exits 1" test "$rc" -eq 1
check "bad model names file:line:column: $msg" grep -q "bad.hmx:3:1: expected ';', got end of input" <<<"$msg"

msg=$("$bin" train "$model" --dataset fashion-mnist --limit-train 100 --backend nosuch 2>&1)
rc=$?
check "unknown backend exits 1" test "$rc" -eq 1
check "unknown backend says why: $msg" grep -q "backend 'nosuch' is not available" <<<"$msg"

# Quantization-aware training at 3 bits, then inference from packed weights.
out=$("$bin" train "$model" --dataset fashion-mnist --limit-train 3000 --limit-eval 1000 --epochs 2 \
      --optimizer adam --lr 0.002 --batch 32 --seed 1 --threads 1 --policy bits:3 \
      --save-weights "$work/w3.safetensors" --json 2>"$work/err")
rc=$?
check "bits:3 training exits 0: $(cat "$work/err")" test "$rc" -eq 0
check "the layer lines name int3_matmul and the bits per weight" \
  grep -q "^layer pixels->hidden: int3 (int3_matmul), 3.449 bits per weight$" <<<"$out"
check "128 inputs fill whole blocks: 3.25 bits" \
  grep -q "^layer hidden->logits: int3 (int3_matmul), 3.250 bits per weight$" <<<"$out"
check "bits:3 JSON" python3 - "$(tail -n 1 <<<"$out")" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
assert j["policy"] == "bits:3", j
assert [l["kernel"] for l in j["layers"]] == ["int3_matmul", "int3_matmul"], j
assert [l["weight_bytes"] for l in j["layers"]] == [128 * 13 * 26, 10 * 2 * 26], j
assert [l["weight_count"] for l in j["layers"]] == [784 * 128, 128 * 10], j
assert 0.6 < j["test_accuracy"] <= 1.0, j
PY
acc3=$(python3 -c 'import json,sys; print("%.2f" % (100*json.loads(sys.argv[1])["test_accuracy"]))' "$(tail -n 1 <<<"$out")")
inf=$("$bin" infer "$model" --weights "$work/w3.safetensors" --dataset fashion-mnist --limit 1000 --policy bits:3 --json 2>&1)
check "packed inference reproduces the training accuracy ($acc3): $inf" grep -q "^accuracy: $acc3% (1000 samples)" <<<"$inf"
check "inference prints each connection's bits per weight and the padding" grep -q \
  "^connection pixels->hidden: int3, 43264 bytes for 100352 weights = 3.449 bits per weight (784 inputs padded to 832)$" \
  <<<"$inf"
check "packed weights cost 3.25 bits times the padding of each connection" python3 - "$(tail -n 1 <<<"$inf")" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
# 784-128-10: 128 rows x 13 blocks + 10 rows x 2 blocks, 26 bytes a block.
assert j["weight_bytes"] == (128 * 13 + 10 * 2) * 26, j
assert j["weight_count"] == 784 * 128 + 128 * 10, j
assert abs(j["bits_per_weight"] - 8 * j["weight_bytes"] / j["weight_count"]) < 1e-6, j
assert j["precision"] == "pixels->hidden int3/int3_matmul; hidden->logits int3/int3_matmul", j
c = j["connections"]
assert [x["connection"] for x in c] == ["pixels->hidden", "hidden->logits"], c
assert [(x["inputs"], x["outputs"], x["weight_bytes"]) for x in c] == [(784, 128, 43264), (128, 10, 520)], c
assert abs(c[0]["bits_per_weight"] - 3.25 * 832 / 784) < 1e-6 and c[1]["bits_per_weight"] == 3.25, c
PY
msg=$("$bin" train "$model" --dataset fashion-mnist --limit-train 100 --policy bits:5 2>&1)
check "a width without kernels is refused: $msg" grep -q "policy bits:5: the packed widths are 8, 4 and 3 bits" <<<"$msg"
msg=$("$bin" train "$model" --dataset fashion-mnist --limit-train 100 --policy layers:8,4,3 2>&1)
rc=$?
check "a per-connection list of the wrong length exits 1" test "$rc" -eq 1
check "... and names the connections: $msg" grep -q \
  "policy connections:8,4,3 gives 3 bit widths but graph 'fashion_mnist' has 2 connections with weights (pixels->hidden, hidden->logits)" \
  <<<"$msg"

# A diverging run (the audit's reproduction: linear, MSE, lr 10) stops with exit 3 and keeps finite weights.
python3 - "$work" <<'PY'
import random, sys
random.seed(1)
with open(sys.argv[1] + "/x.csv", "w") as f:
    for _ in range(48): f.write(",".join("%.3f" % random.uniform(-2, 2) for _ in range(4)) + "\n")
with open(sys.argv[1] + "/t.csv", "w") as f:
    for _ in range(48): f.write("%.3f\n" % random.uniform(-1, 1))
PY
echo 'producer x {4}; producer t {1}; layer o {1}; cycle { x -> o; o <-(mse)- t; }' >"$work/lin.hmx"
"$bin" train "$work/lin.hmx" --data x=csv:"$work/x.csv" --data t=csv:"$work/t.csv" --lr 10 --batch 1 --epochs 10 \
  --save-weights "$work/dv.safetensors" --checkpoint "$work/dv.hck" >"$work/dv.out" 2>"$work/dv.err"
rc=$?
check "a diverging run exits 3 (rc=$rc)" test "$rc" -eq 3
check "it names the step, loss and rate: $(cat "$work/dv.err")" \
  grep -q "training diverged at step 13 (epoch 0): loss inf, gradient norm inf, learning rate 10; the graph keeps the weights after step 12" "$work/dv.err"
check "no final loss is printed for it" test ! -s "$work/dv.out"
check "the saved weights are the last finite ones" python3 - "$work/dv.safetensors" <<'PY'
import json, math, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
values = struct.unpack("<%df" % ((len(data) - 8 - n) // 4), data[8 + n:])
assert len(values) == 5 and all(math.isfinite(v) for v in values), values
PY
"$bin" train "$work/lin.hmx" --data x=csv:"$work/x.csv" --data t=csv:"$work/t.csv" --threads 1 --epochs 1 \
  --resume "$work/dv.hck" >/dev/null 2>"$work/dv2.err"
check "the checkpoint holds step 12: $(cat "$work/dv2.err")" grep -q "resuming .*dv.hck at epoch 0, step 12" "$work/dv2.err"

msg=$("$bin" train "$model" --dataset fashion-mnist --limit-train 100 --optimizer adam --weight-decay 0.5 --momentum 0.9 2>&1)
rc=$?
check "an option the optimizer ignores exits 1 (rc=$rc)" test "$rc" -eq 1
check "... naming it: $msg" grep -q "momentum is 0.9 but optimizer adam does not use it (momentum is for SGD" <<<"$msg"

"$bin" train "$model" --epochz 3 >/dev/null 2>&1
rc=$?
check "unknown option exits 2" test "$rc" -eq 2
"$bin" nosuchcommand >/dev/null 2>&1
rc=$?
check "unknown command exits 2" test "$rc" -eq 2
"$bin" --version | grep -q "harmonics .* (plugin ABI 1.1"
rc=$?
check "--version" test "$rc" -eq 0
# Every format the CLI writes, it reads, recognised by content: a compiled
# .hgr trains, .hnwt and .hck weights run inference, and the wrong kind of
# file is named as what it is.
"$bin" compile "$model" -o "$work/fm.hgr" >/dev/null 2>&1
rc=$?
check "compile writes a .hgr" test "$rc" -eq 0
fm=(--dataset fashion-mnist --limit-train 1000 --limit-eval 500 --epochs 1 --seed 3 --threads 1)
out=$("$bin" train "$work/fm.hgr" "${fm[@]}" --save-weights "$work/fm.safetensors" --checkpoint "$work/fm.hck" 2>&1)
rc=$?
check "train reads the .hgr it compiled: $out" test "$rc" -eq 0
acc=$(sed -n 's/^test accuracy: \(.*\)$/\1/p' <<<"$out")
"$bin" convert "$work/fm.safetensors" "$work/fm.hnwt" >/dev/null 2>&1
rc=$?
check "convert safetensors -> .hnwt" test "$rc" -eq 0
for w in fm.safetensors fm.hnwt fm.hck; do
  out=$("$bin" infer "$work/fm.hgr" --weights "$work/$w" --dataset fashion-mnist --limit 500 2>&1)
  rc=$?
  check "infer reads --weights $w: $out" test "$rc" -eq 0
  check "... with the training's accuracy ($acc)" grep -q "^accuracy: $acc (500 samples)" <<<"$out"
done
"$bin" convert "$work/fm.hck" "$work/from_ck.safetensors" >/dev/null 2>&1
rc=$?
check "convert takes a checkpoint's weights" test "$rc" -eq 0
check "... the same bytes as the saved weights" cmp -s "$work/from_ck.safetensors" "$work/fm.safetensors"
msg=$("$bin" infer "$work/fm.hnwt" --weights "$work/fm.hck" --dataset fashion-mnist 2>&1)
rc=$?
check "weights given as the model exit 1" test "$rc" -eq 1
check "... and say what the file is: $msg" grep -q "fm.hnwt is a weights file (.hnwt), not a model" <<<"$msg"
msg=$("$bin" infer "$model" --weights "$work/fm.hgr" --dataset fashion-mnist 2>&1)
check "a graph given as weights says so: $msg" grep -q "fm.hgr is a binary graph (.hgr), not weights" <<<"$msg"
for sub in compile convert; do
  "$bin" "$sub" --help >"$work/help.txt" 2>&1
  rc=$?
  check "$sub --help exits 0" test "$rc" -eq 0
  check "$sub --help prints its usage" grep -q "^usage: harmonics $sub" "$work/help.txt"
done

# The way a new user meets the program: help for a command, errors that say
# what is missing, each message once, and which backend ran.
out=$("$bin" help train 2>&1)
rc=$?
check "help train exits 0" test "$rc" -eq 0
check "help train prints train's usage" grep -q "^usage: harmonics train MODEL.hmx" <<<"$out"
msg=$("$bin" infer "$model" --dataset fashion-mnist 2>&1)
rc=$?
check "infer without --weights exits 2" test "$rc" -eq 2
check "... and says what is missing: $msg" grep -q "^harmonics infer: --weights FILE is missing" <<<"$msg"
printf '0.1,0.2\n' >"$work/two.csv"
msg=$("$bin" train "$model" --data "pixels=$work/two.csv" 2>&1)
check "a data spec without a kind is one line: $msg" test "$(wc -l <<<"$msg")" -eq 1
check "... naming the kinds" grep -q "must be idx:PATH, csv:PATH or labels:PATH" <<<"$msg"
printf 'producer x {3};\nlayer y {2};\ncycle { x -> y; y <-(mse)- x; }\n' >"$work/wrongwidth.hmx"
msg=$("$bin" train "$work/wrongwidth.hmx" --dataset fashion-mnist --limit-train 10 2>&1)
check "a width error names the file once: $msg" test "$(grep -o "wrongwidth.hmx" <<<"$msg" | wc -l)" -eq 1
msg=$("$bin" train "$model" --dataset fashion-mnist --limit-train 10 --backend tpu 2>&1)
check "an unknown backend lists the ones there are: $msg" grep -q "no plugin named 'tpu' was found; the plugins found are cpu" <<<"$msg"
out=$("$bin" train "$model" --dataset fashion-mnist --limit-train 200 --limit-eval 100 2>&1)
check "train says which backend ran" grep -q "^backend: cpu:0$" <<<"$out"
out=$("$bin" infer "$model" --weights "$work/fm.safetensors" --dataset fashion-mnist --limit 100 2>&1)
check "infer says which backend ran" grep -q "^backend: cpu:0$" <<<"$out"

# A plugin that crashes in its query no longer takes every run down.
tp="$(dirname "$bin")/../tests/plugins/hm_tp_query_crash.so"
if [[ -f "$tp" ]]; then
  out=$(HARMONICS_CACHE_DIR="$work/cache" HARMONICS_PLUGIN_PATH="$tp" "$bin" train "$model" --dataset fashion-mnist \
        --limit-train 200 --limit-eval 100 --backend cpu 2>&1)
  rc=$?
  check "train --backend cpu survives a crashing plugin (exit $rc): $(tail -2 <<<"$out")" test "$rc" -eq 0
  out=$(HARMONICS_CACHE_DIR="$work/cache" HARMONICS_PLUGIN_PATH="$tp" "$bin" plugins 2>&1)
  rc=$?
  check "harmonics plugins survives it too (exit $rc)" test "$rc" -eq 0
  # (under AddressSanitizer the crashing child exits with 1 instead of the signal)
  check "... and says why it was skipped" grep -Eq "hm_tp_query_crash.so: (crashed with signal 11|exited the process with status 1)" <<<"$out"
fi

# Images: a model with every connection kind resumes bit-identically, keeps
# batch norm's running statistics in its weights (PyTorch's names), infers
# in evaluation mode (running statistics, no dropout) to the accuracy
# training reported, and trains the same from its compiled .hgr.
cnn=$src/tests/data/cnn_full.hmx
cc=(--dataset fashion-mnist --limit-train 1500 --limit-eval 500 --optimizer adam --lr 0.002 --batch 50 --seed 5 --threads 2)
out=$("$bin" train "$cnn" "${cc[@]}" --epochs 2 --save-weights "$work/cnn.safetensors" --json 2>"$work/cnn.err")
check "the CNN trains: $(tail -2 "$work/cnn.err")" test -s "$work/cnn.safetensors"
cnn_acc=$(python3 -c 'import json,sys; print("%.2f" % (100 * json.loads(sys.stdin.read().strip().splitlines()[-1])["test_accuracy"]))' <<<"$out")
"$bin" train "$cnn" "${cc[@]}" --epochs 1 --checkpoint "$work/cnn.hck" >/dev/null 2>&1
"$bin" train "$cnn" --dataset fashion-mnist --limit-train 1500 --limit-eval 500 --threads 2 --epochs 2 \
  --resume "$work/cnn.hck" --save-weights "$work/cnn_resumed.safetensors" >/dev/null 2>"$work/cnn_resume.err"
check "the CNN resumes bit-identically (running statistics and dropout's masks included): $(tail -2 "$work/cnn_resume.err")" \
  cmp -s "$work/cnn.safetensors" "$work/cnn_resumed.safetensors"
check "the CNN's weights hold batch norm's running statistics" python3 - "$work/cnn.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
base = 8 + struct.unpack("<Q", b[:8])[0]
assert h["pixels->conv.weight"]["shape"] == [8, 1, 3, 3], h["pixels->conv.weight"]
for name in ("conv->normed.running_mean", "conv->normed.running_var"):
    t = h[name]
    assert t["shape"] == [8] and t["dtype"] == "F32", t
    a, e = t["data_offsets"]
    vals = struct.unpack("<8f", b[base + a:base + e])
    assert all(v != (0.0 if name.endswith("mean") else 1.0) for v in vals), (name, vals)  # they moved
assert h["hidden->normal.weight"]["shape"] == [32], h["hidden->normal.weight"]
PY
inf=$("$bin" infer "$cnn" --weights "$work/cnn.safetensors" --dataset fashion-mnist --limit 500 2>&1)
check "the CNN infers to its training run's accuracy ($cnn_acc%): $inf" grep -q "accuracy: $cnn_acc% (500 samples)" <<<"$inf"
# A producer with no declared shape takes the images' {1x28x28} from the IDX file.
printf 'producer pixels; producer label; layer c; layer logits;\ncycle { pixels -[conv 4 3x3 stride 2]-> c -> logits; logits <-(cross_entropy)- label; }\n' >"$work/noshape.hmx"
out=$("$bin" train "$work/noshape.hmx" --dataset fashion-mnist --limit-train 200 --limit-eval 100 --json 2>&1)
check "--dataset fashion-mnist gives an undeclared producer the images' shape: $out" grep -q '"test_accuracy"' <<<"$out"
printf 'producer pixels {784}; producer label; layer c; layer logits;\ncycle { pixels -[conv 4 3x3]-> c -> logits; logits <-(cross_entropy)- label; }\n' >"$work/flat.hmx"
out=$("$bin" train "$work/flat.hmx" --dataset fashion-mnist --limit-train 200 --limit-eval 100 2>&1)
check "a declared {784} takes the images' shape too: $out" grep -q "test accuracy" <<<"$out"
"$bin" compile "$cnn" -o "$work/cnn.hgr" >/dev/null 2>&1
"$bin" train "$work/cnn.hgr" "${cc[@]}" --epochs 2 --save-weights "$work/cnn_hgr.safetensors" >/dev/null 2>"$work/cnn_hgr.err"
check "the compiled CNN (.hgr version 3) trains to the same bytes: $(tail -2 "$work/cnn_hgr.err")" \
  cmp -s "$work/cnn.safetensors" "$work/cnn_hgr.safetensors"

exit $fail
