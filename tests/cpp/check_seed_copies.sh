#!/usr/bin/env bash
# The copies in tests/cpp/seed/ are the ```cpp blocks of seed/Training.md,
# byte for byte and in order, so they cannot drift from the document.
#   check_seed_copies.sh SOURCE_DIR
# Exit 77 when the document is not there (a clone without ../shared).
set -u
src=$1
doc=$src/../shared/seed/Training.md
[ -f "$doc" ] || { echo "skipped: $doc is not here"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Each block, without its fences, into its own file: 1, 2, ...
awk -v dir="$tmp" '
  /^```cpp$/ { n++; inside = 1; next }
  /^```$/ && inside { inside = 0; next }
  inside { print > (dir "/" n) }
' "$doc"
copies=("$src"/tests/cpp/seed/*.inc)
blocks=$(ls "$tmp" | wc -l)
rc=0
if [ "$blocks" -ne "${#copies[@]}" ]; then
  echo "FAIL: the document has $blocks cpp blocks, tests/cpp/seed has ${#copies[@]} copies"
  rc=1
fi
for f in "${copies[@]}"; do
  i=$(basename "$f"); i=${i%%_*}
  if ! cmp -s "$tmp/$i" "$f"; then
    echo "FAIL: block $i of $doc differs from $f:"
    diff "$tmp/$i" "$f" | head -20
    rc=1
  fi
done
[ $rc -eq 0 ] && echo "ok: ${#copies[@]} blocks match $doc"
exit $rc
