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

# weights_within A B LIMIT: the largest relative difference between two
# safetensors files of the same tensors is at most LIMIT (printed either way).
weights_within() {
  /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; out[k] = struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
worst = max(abs(x - y) / max(abs(x), 1e-2) for k in a for x, y in zip(a[k], b[k]))
print("largest relative difference %.3g" % worst)
sys.exit(0 if worst <= float(sys.argv[3]) else 1)
PY
}

# disrupt SIGNAL PATTERN MATCH OUT COMMAND...: runs COMMAND (a 2-process
# mpirun job whose processes' command lines contain MATCH) in the
# background, sends SIGNAL to one of its processes after 2 s, and checks the
# job ends non-zero within 40 s with output (kept in OUT) matching PATTERN.
disrupt() {
  local sig=$1 pattern=$2 match=$3 out=$4 start job victim="" rc elapsed
  shift 4
  start=$(date +%s)
  "$@" >"$out" 2>&1 &
  job=$!
  for _ in $(seq 100); do
    [ "$(pgrep -fc "$match")" -ge 2 ] && break
    sleep 0.1
  done
  sleep 2
  victim=$(pgrep -f "$match" | sort -n | tail -1)
  check "found a process to $sig" test -n "$victim"
  [ -n "$victim" ] && kill -"$sig" "$victim"
  for _ in $(seq 600); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
  if kill -0 $job 2>/dev/null; then
    check "the job ends after SIG$sig to a process (it still runs after 60 s)" false
    pkill -9 -f "$match"
  fi
  wait $job
  rc=$?
  elapsed=$(($(date +%s) - start))
  check "SIG$sig to a process: the job exits non-zero (rc $rc)" test "$rc" -ne 0
  check "SIG$sig to a process: within the timeout ($elapsed s)" test "$elapsed" -le 40
  check "SIG$sig to a process: a message: $(grep -v '^epoch' "$out" | head -3)" grep -Eq "$pattern" "$out"
  pkill -9 -f "$match" 2>/dev/null
}
