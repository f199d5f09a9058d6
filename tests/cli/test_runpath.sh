#!/usr/bin/env bash
# No built program or library looks for libraries in the current directory:
# every RUNPATH/RPATH entry is absolute or $ORIGIN-relative, never empty (glibc
# reads an empty entry as "."), and a fake libOpenCL.so.1 in the working
# directory is not loaded by `harmonics plugins`.
#   test_runpath.sh BUILD_DIR
set -u
build=$1
source "$(dirname "$0")/check.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=0
while IFS= read -r -d '' f; do
  head -c 4 "$f" 2>/dev/null | grep -q $'\x7fELF' || continue
  n=$((n + 1))
  paths=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]$/\2/p')
  [[ -z "$paths" ]] && continue
  bad=$(python3 -c '
import sys
for e in sys.argv[1].split(":"):
    if not e or not (e.startswith("/") or e.startswith("$ORIGIN")):
        print(repr(e)); break' "$paths")
  check "$f: RUNPATH [$paths] has no empty or relative entry ($bad)" test -z "$bad"
done < <(find "$build/bin" "$build/lib" -type f -print0)
check "ELF files were checked ($n)" test "$n" -ge 5

cat >"$work/fake.c" <<'C'
#include <stdio.h>
__attribute__((constructor)) static void hijack(void) {
  FILE *f = fopen("HIJACKED", "w");
  if (f) fclose(f);
}
C
cc -shared -fPIC -o "$work/libOpenCL.so.1" "$work/fake.c"
cp "$work/libOpenCL.so.1" "$work/libvulkan.so.1"
cp "$work/libOpenCL.so.1" "$work/libopenblas.so.0"
(cd "$work" && "$build/bin/harmonics" plugins >/dev/null 2>&1)
check "a library in the working directory is never loaded" test ! -e "$work/HIJACKED"
exit "$fail"
