#!/usr/bin/env bash
# The C test harness reports a crash and a hang under the case's name, and
# runs every later case (tests/hm_test.c).
#   test_harness.sh HARNESS_SELFTEST
set -u
out=$(HM_TEST_TIMEOUT=1 "$1" 2>&1)
rc=$?
fail=0
expect() { grep -qF -- "$1" <<<"$out" || { echo "missing: $1"; fail=1; }; }
expect "[  OK  ] passes"
expect "[ FAIL ] fails"
expect "[ CRASH ] crashes (signal 11: Segmentation fault)"
expect "[ TIME  ] hangs (over 1 s)"
expect "[ SKIP ] skips"
expect "[  OK  ] passes_after"
expect "2 passed, 3 failed, 1 skipped"
[[ $rc -eq 1 ]] || { echo "exit status $rc, expected 1"; fail=1; }
# The shell tests' check helper runs a command; an exit status must be saved
# (rc=$?) before it, never passed as "$?" beside other expansions, which
# would test the status of a $(...) in the description instead.
misuse=$(grep -n 'check .*\$?' "$(dirname "$0")"/*.sh | grep -v 'test_harness.sh' | grep -Ev '^[^:]*:[0-9]+: *#')
[[ -z "$misuse" ]] || { echo "check with \$? (save rc=\$? first): $misuse"; fail=1; }
[[ $fail -eq 0 ]] || { echo "$out"; exit 1; }
echo "harness: crash, hang, failure and skip reported by name; later cases ran"
