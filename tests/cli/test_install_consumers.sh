#!/usr/bin/env bash
# An installed Harmonics serves both consumer routes from any prefix:
# examples/train_fashion_mnist.c and .cpp built with pkg-config (harmonics,
# harmonics-cpp) and with find_package(Harmonics), warning-free, then run;
# the seed's C++ snippets compile out of tree with g++ and clang++ as C++17
# and C++20; and harmonics.pc still resolves after the prefix is moved (it
# names no absolute prefix).
#   test_install_consumers.sh BUILD_DIR SOURCE_DIR
set -u
build=$1
src=$2
source "$(dirname "$0")/check.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

install_harmonics "$build" "$work/prefix"
flags=$(pkg-config --cflags --libs harmonics)
rc=$?
check "pkg-config finds harmonics" test "$rc" -eq 0
inc=$(pkg-config --variable=includedir harmonics)
lib=$(pkg-config --variable=libdir harmonics)
check "includedir is inside the prefix ($inc)" test "$(realpath "$inc")" = "$(realpath "$work/prefix/include")"
check "libdir is inside the prefix ($lib)" test "$(realpath "$lib")" = "$(realpath "$work/prefix/lib")"

# Route 1: pkg-config.
# shellcheck disable=SC2086
cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$src/examples/train_fashion_mnist.c" $flags -Wl,-rpath,"$lib" \
  -o "$work/app_pkgconfig" 2>"$work/cc.log"
rc=$?
check "the example compiles warning-free with pkg-config: $(cat "$work/cc.log")" test "$rc" -eq 0
out=$("$work/app_pkgconfig" --epochs 1 --limit 2000 --save "$work/w.safetensors" 2>&1)
rc=$?
check "the pkg-config build runs: $out" test "$rc" -eq 0
check "it trains 32 steps and reports the test accuracy" \
  grep -Eq "^trained 32 steps on cpu:0; test accuracy [0-9.]+% over 2000 samples" <<<"$out"
check "it saves the weights" test -s "$work/w.safetensors"
acc=$(sed -n 's/^epoch 1: test accuracy \([0-9.]*\)%$/\1/p' <<<"$out")
check "the epoch callback reports the accuracy ($acc%)" \
  python3 -c "import sys; sys.exit(0 if 50 < float(sys.argv[1]) <= 100 else 1)" "${acc:-0}"

# The C++ layer through pkg-config (harmonics-cpp): the C++ example, and the
# seed's snippets (tests/cpp/seed_snippets.cpp) with g++ and clang++ as C++17
# and C++20, warning-free.
cxxflags=$(pkg-config --cflags --libs harmonics-cpp)
rc=$?
check "pkg-config finds harmonics-cpp" test "$rc" -eq 0
# shellcheck disable=SC2086
c++ -std=c++17 -Wall -Wextra -Wpedantic -Werror "$src/examples/train_fashion_mnist.cpp" $cxxflags \
  -Wl,-rpath,"$lib" -o "$work/app_cpp" 2>"$work/cxx.log"
rc=$?
check "the C++ example compiles warning-free with pkg-config: $(cat "$work/cxx.log")" test "$rc" -eq 0
out_cpp=$("$work/app_cpp" --epochs 1 --limit 2000 --save "$work/model" 2>&1)
rc=$?
check "the C++ example runs: $out_cpp" test "$rc" -eq 0
check "it trains as the C example does" test "$(grep '^trained' <<<"$out_cpp")" = "$(grep '^trained' <<<"$out")"
check "it saves the graph and the weights" test -s "$work/model.hgr" -a -s "$work/model.hnwt"
for cxx in g++ clang++; do
  command -v "$cxx" >/dev/null || { check "$cxx is installed" false; continue; }
  for std in 17 20; do
    # shellcheck disable=SC2086
    "$cxx" -std=c++$std -Wall -Wextra -Wpedantic -Werror -DHM_SOURCE_DIR="\"$src\"" \
      "$src/tests/cpp/seed_snippets.cpp" $cxxflags -Wl,-rpath,"$lib" -o "$work/seed_${cxx}_$std" 2>"$work/seed.log"
    rc=$?
    check "the seed's snippets compile with $cxx -std=c++$std: $(head -20 "$work/seed.log")" test "$rc" -eq 0
  done
done
(cd "$work" && ./seed_clang++_20 fit_until >"$work/seed_run.log" 2>&1)
rc=$?
check "the clang++ C++20 build runs the fit_until block: $(cat "$work/seed_run.log")" test "$rc" -eq 0 -o "$rc" -eq 77

# Route 2: find_package(Harmonics) from the same prefix.
cmake -S "$src/examples" -B "$work/cm" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_C_FLAGS="-Wall -Wextra -Wpedantic -Werror" -DCMAKE_CXX_FLAGS="-Wall -Wextra -Wpedantic -Werror" \
  >"$work/cm.log" 2>&1 &&
  cmake --build "$work/cm" >>"$work/cm.log" 2>&1
rc=$?
check "the example builds with find_package(Harmonics): $(tail -5 "$work/cm.log")" test "$rc" -eq 0
out2=$("$work/cm/train_fashion_mnist" --epochs 1 --limit 2000 2>&1)
rc=$?
check "the find_package build runs" test "$rc" -eq 0
check "both builds train identically" test "$(grep '^trained' <<<"$out2")" = "$(grep '^trained' <<<"$out")"
out3=$("$work/cm/train_fashion_mnist_cpp" --epochs 1 --limit 2000 2>&1)
rc=$?
check "the C++ example builds with find_package (Harmonics::harmonics_cpp) and runs: $out3" test "$rc" -eq 0
check "and trains identically" test "$(grep '^trained' <<<"$out3")" = "$(grep '^trained' <<<"$out")"
if pkg-config --exists grpc++ protobuf && command -v grpc_cpp_plugin >/dev/null; then
  check "with gRPC C++ installed the parameter server example builds out of tree, warning-free" \
    test -x "$work/cm/distributed_parameter_server_example"
fi

# The installed tree is relocatable: move it and build again.
mv "$work/prefix" "$work/moved"
export PKG_CONFIG_PATH="$work/moved/lib/pkgconfig"
check "after a move, includedir follows the prefix" \
  test "$(realpath "$(pkg-config --variable=includedir harmonics)")" = "$(realpath "$work/moved/include")"
# shellcheck disable=SC2046
cc -std=c11 -Werror "$src/examples/train_fashion_mnist.c" $(pkg-config --cflags --libs harmonics) \
  -Wl,-rpath,"$work/moved/lib" -o "$work/app_moved" 2>"$work/cc2.log"
rc=$?
check "the example builds against the moved prefix: $(cat "$work/cc2.log")" test "$rc" -eq 0
"$work/app_moved" --epochs 1 --limit 500 >"$work/moved.log" 2>&1
rc=$?
check "and runs from it: $(tail -2 "$work/moved.log")" test "$rc" -eq 0
exit "$fail"
