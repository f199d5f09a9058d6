#!/usr/bin/env bash
# The vendor template builds out of tree against an installed Harmonics and
# passes harmonics conform.
#   test_vendor_plugin.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/examples/vendor_plugin" -B "$work/vendor" -DCMAKE_PREFIX_PATH="$work/prefix" >"$work/configure.log" 2>&1 \
  || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/vendor" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
"$work/prefix/bin/harmonics" conform "$work/vendor/hm_myvendor.so" --json >"$work/report.json" 2>"$work/report.txt" \
  || { cat "$work/report.txt"; exit 1; }
python3 - "$work/report.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["conformant"] and j["plugin"]["name"] == "myvendor", j["totals"]
passed = {r["name"] for r in j["results"] if r["status"] == "PASS"}
for name in ["abi.exports", "kernel.gemm.f32.31x17x257.ab1", "kernel.sgd.momentum.n40000.12_steps",
             "kernel.act_forward.relu.65x130", "robustness.bad_programs", "robustness.concurrent_devices"]:
    assert name in passed, name
print("vendor template: %d PASS, %d NOT_SUPPORTED" % (j["totals"]["PASS"], j["totals"]["NOT_SUPPORTED"]))
PY
# The installed package also works for plain consumers: pkg-config and the plugin directory.
PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --cflags --libs harmonics | grep -q -- "-lharmonics"
test -f "$work/prefix/lib/harmonics/plugins/hm_cpu.so"
HARMONICS_PLUGIN_PATH="$work/vendor" "$work/prefix/bin/harmonics" plugins | grep -q "myvendor .*\[loaded\]"
