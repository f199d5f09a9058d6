#!/usr/bin/env bash
# harmonics conform: the CPU plugin is conformant; each plugin broken on
# purpose is caught with the right status at the right tests, and nothing
# else is reported against it.
#   test_conform.sh HARMONICS_BINARY CPU_PLUGIN BROKEN_PLUGIN_DIR
set -u
bin=$1
cpu=$2
dir=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0

"$bin" conform "$cpu" --json >"$work/cpu.json" 2>"$work/cpu.txt"
rc=$?
if [[ $rc -ne 0 ]]; then echo "FAIL: the CPU plugin is not conformant (rc=$rc)"; cat "$work/cpu.txt"; fail=1; fi
python3 - "$work/cpu.json" <<'PY' || fail=1
import json, sys
j = json.load(open(sys.argv[1]))
assert j["conformant"] is True, j["totals"]
assert j["plugin"]["name"] == "cpu" and j["host_abi"] == "1.1" and j["seed"] > 0, j["plugin"]
t = j["totals"]
assert t["FAIL"] == 0 and t["CRASH"] == 0 and t["TIMEOUT"] == 0 and t["PASS"] > 250, t
names = {r["name"]: r["status"] for r in j["results"]}
for must in ["abi.exports", "abi.negotiate.older_host_major", "abi.load_unload_cycles", "kernel.gemm.f32.256x256x256.ab0",
             "kernel.adam.n40000.12_steps", "program.mlp_training_step", "program.mlp_training_step.classes_8",
             "robustness.concurrent_devices"]:
    assert names.get(must) == "PASS", (must, names.get(must))
assert names["kernel.gemm.f16.1x1x1.ab0"] == "NOT_SUPPORTED"
assert names["kernel.gemm.bf16.1x1x1.ab0"] == "PASS"
for q in ["kernel.int3_matmul.64x128x784", "kernel.quantize.q3.17x200", "kernel.dequantize.q4.3x70",
          "kernel.int8_matmul.1x67x1000"]:
    assert names.get(q) == "PASS", (q, names.get(q))
PY

# check PLUGIN EXPECTED_STATUS PREFIX [EXTRA conform options]
check() {
  local plugin=$1 status=$2 prefix=$3; shift 3
  "$bin" conform "$dir/hm_bp_$plugin.so" --json "$@" >"$work/$plugin.json" 2>"$work/$plugin.txt"
  local rc=$?
  if [[ $rc -ne 1 ]]; then echo "FAIL: bp_$plugin: exit status $rc, expected 1 (not conformant)"; fail=1; fi
  python3 - "$work/$plugin.json" "$status" "$prefix" <<'PY' || { echo "FAIL: bp_$plugin"; head -40 "$work/$plugin.txt"; fail=1; }
import json, sys
j = json.load(open(sys.argv[1]))
status, prefix = sys.argv[2], sys.argv[3]
assert j["conformant"] is False
bad = [r for r in j["results"] if r["status"] in ("FAIL", "CRASH", "TIMEOUT")]
hit = [r for r in bad if r["name"].startswith(prefix)]
assert hit, "nothing reported at %s: %s" % (prefix, bad[:3])
assert all(r["status"] == status for r in hit), hit[:3]
others = [r for r in bad if not r["name"].startswith(prefix)]
extra = sys.argv[4:] if len(sys.argv) > 4 else []
print("%s: %d x %s at %s; first: %s" % (j["plugin"]["name"], len(hit), status, prefix, hit[0]["detail"][:150]))
assert all(r["detail"] for r in hit), "failures must say what went wrong"
for r in others:
    print("  also: %s %s" % (r["name"], r["status"]))
PY
}

check gemm_odd FAIL kernel.gemm.f32.7x13x5
grep -q "NMSE" "$work/gemm_odd.json" || { echo "FAIL: gemm_odd detail lacks the error figure"; fail=1; }
grep -q "seed 20261128" "$work/gemm_odd.json" || { echo "FAIL: gemm_odd detail lacks the seed"; fail=1; }
check adam_nan FAIL kernel.adam.n
grep -q "step 7 of 12" "$work/adam_nan.json" || { echo "FAIL: adam_nan should fail at step 7"; fail=1; }
check oob_write FAIL kernel.fill.
grep -q "written past its extent" "$work/oob_write.json" || { echo "FAIL: oob_write detail"; fail=1; }
# Under AddressSanitizer the crash must stay a plain SIGSEGV for this check.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0" check crash_run CRASH kernel.reduce_cols
grep -q "signal 11" "$work/crash_run.json" || { echo "FAIL: crash_run should report signal 11"; fail=1; }
check hang TIMEOUT kernel.clip --timeout 2 --test 'kernel.clip*' --test 'kernel.scale*'
check bad_version FAIL abi.negotiate.newer_host_minor --test 'abi.*'
check q3_ulp FAIL kernel.int3_matmul --test 'kernel.int*'
grep -q "differs from the reference at byte 0 (numerics exact)" "$work/q3_ulp.json" || { echo "FAIL: q3_ulp detail"; fail=1; }

# --list and --test select one case; an unknown test is a usage error.
"$bin" conform --list | grep -qx "kernel.gemm.f32.7x13x5.ab0" || { echo "FAIL: --list"; fail=1; }
"$bin" conform "$cpu" --test kernel.gemm.f32.7x13x5.ab0 >"$work/one.txt" 2>&1 || { echo "FAIL: --test one case"; fail=1; }
grep -q "^total  *1  *0" "$work/one.txt" || { echo "FAIL: --test ran more than one case"; cat "$work/one.txt"; fail=1; }
"$bin" conform "$cpu" --test no.such.test >/dev/null 2>&1; [[ $? -eq 2 ]] || { echo "FAIL: unknown --test"; fail=1; }

# --device-option reaches every device_open and the report; a malformed one
# is a usage error, one the plugin refuses fails the tests that open a device.
"$bin" conform "$cpu" --device-option threads=1 --test kernel.gemm.f32.7x13x5.ab0 --json >"$work/opt.json" 2>"$work/opt.txt"
rc=$?
[[ $rc -eq 0 ]] && grep -qx "device option threads=1" "$work/opt.txt" &&
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["device_options"] == {"threads": "1"}, j["device_options"]' \
    "$work/opt.json" || { echo "FAIL: --device-option threads=1 (rc=$rc)"; cat "$work/opt.txt"; fail=1; }
"$bin" conform "$cpu" --device-option threads >/dev/null 2>"$work/bad.txt"; rc=$?
[[ $rc -eq 2 ]] && grep -q "wants KEY=VALUE" "$work/bad.txt" || { echo "FAIL: --device-option without '=' (rc=$rc)"; fail=1; }
"$bin" conform "$cpu" --device-option no_such_option=1 --test kernel.gemm.f32.7x13x5.ab0 >"$work/refused.txt" 2>&1; rc=$?
[[ $rc -eq 1 ]] && grep -q "^FAIL kernel.gemm.f32.7x13x5.ab0: device_open(0) failed" "$work/refused.txt" ||
  { echo "FAIL: a refused device option (rc=$rc)"; cat "$work/refused.txt"; fail=1; }
exit $fail
