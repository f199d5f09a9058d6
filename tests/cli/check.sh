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

# install_harmonics BUILD_DIR PREFIX: cmake --install into PREFIX (checked)
# and point pkg-config at it.
install_harmonics() {
  cmake --install "$1" --prefix "$2" >"$2.install.log" 2>&1
  local rc=$?
  check "cmake --install to $2: $(tail -3 "$2.install.log")" test "$rc" -eq 0
  export PKG_CONFIG_PATH="$2/lib/pkgconfig"
}
