#!/usr/bin/env bash
# Every C block in docs/*.md is a complete program: it compiles warning-free
# against an installed Harmonics and runs (from a directory where
# examples/ is the repository's), exiting 0 with some output.
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
  # Writes block K of $doc to $work/<doc>_<K>.c; prints the file names.
  files=$(python3 - "$doc" "$work" <<'PY'
import os, re, sys
doc, out = sys.argv[1], sys.argv[2]
text = open(doc).read()
base = os.path.splitext(os.path.basename(doc))[0]
for k, m in enumerate(re.finditer(r"^```c\n(.*?)^```", text, re.S | re.M)):
    path = os.path.join(out, "%s_%d.c" % (base, k))
    open(path, "w").write(m.group(1))
    print(path)
PY
)
  for c in $files; do
    n=$((n + 1))
    name=$(basename "$c" .c)
    # shellcheck disable=SC2046
    cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$c" $(pkg-config --cflags --libs harmonics) \
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
check "docs/ holds C blocks ($n)" test "$n" -ge 1
exit "$fail"
