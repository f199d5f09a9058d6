#!/usr/bin/env bash
# Every C and C++ block in docs/*.md (```c, ```cpp) is a complete program: it
# compiles warning-free against an installed Harmonics (C11 through
# harmonics.pc, C++17 through harmonics-cpp.pc) and runs (from a directory
# where examples/ is the repository's), exiting 0 with some output.
#   test_doc_snippets.sh BUILD_DIR SOURCE_DIR
set -u
build=$1
src=$2
source "$(dirname "$0")/check.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
install_harmonics "$build" "$work/prefix"
ln -s "$src/examples" "$work/examples"
n=0
for doc in "$src"/docs/*.md; do
  # Writes block K of $doc to $work/<doc>_<K>.c or .cpp; prints the file names.
  files=$(python3 - "$doc" "$work" <<'PY'
import os, re, sys
doc, out = sys.argv[1], sys.argv[2]
text = open(doc).read()
base = os.path.splitext(os.path.basename(doc))[0]
for k, m in enumerate(re.finditer(r"^```(c|cpp)\n(.*?)^```", text, re.S | re.M)):
    path = os.path.join(out, "%s_%d.%s" % (base, k, m.group(1)))
    open(path, "w").write(m.group(2))
    print(path)
PY
)
  for c in $files; do
    n=$((n + 1))
    name=$(basename "$c"); name=${name%.*}
    if [[ $c == *.cpp ]]; then compile=(c++ -std=c++17) pc=harmonics-cpp; else compile=(cc -std=c11) pc=harmonics; fi
    # shellcheck disable=SC2046
    "${compile[@]}" -Wall -Wextra -Wpedantic -Werror "$c" $(pkg-config --cflags --libs $pc) \
      -Wl,-rpath,"$work/prefix/lib" -o "$work/$name" 2>"$work/$name.cc"
    rc=$?
    check "$(basename "$doc") block $name compiles warning-free: $(cat "$work/$name.cc")" test "$rc" -eq 0
    [[ $rc -eq 0 ]] || continue
    (cd "$work" && timeout 300 "./$name") >"$work/$name.out" 2>&1
    rc=$?
    check "$name runs: $(tail -3 "$work/$name.out")" test "$rc" -eq 0
    check "$name prints something" test -s "$work/$name.out"
    echo "$name: $(tail -1 "$work/$name.out")"
  done
done
check "docs/ holds C and C++ blocks ($n)" test "$n" -ge 2
exit "$fail"
