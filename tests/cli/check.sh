# The shell tests' one assertion, sourced by tests/cli/*.sh:
#   check "description" command...   runs the command; a non-zero status is a failure
# Save an exit status first (rc=$?; check "..." test "$rc" -eq 0): "$?" beside
# other expansions would test the status of a $(...) in the description
# (test_harness.sh refuses that use). Scripts end with `exit "$fail"`.
fail=0
check() {
  local what=$1; shift
  if ! "$@"; then echo "FAIL: $what"; fail=1; fi
}
