#!/usr/bin/env bash
# The project's test command: installs the end-to-end test dependencies, then
# runs every test of the workspace (unit, protocol and end-to-end tests).
# Needs root (the end-to-end tests start private dockerd/containerd/podman in
# their own mount namespaces). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/setup-test-deps.sh

log="$(mktemp /tmp/specreg-test.XXXXXX.log)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

# The benchmark's quick mode, so it never rots (it asserts no timing: it fails only when
# something in it breaks). Its table goes to the log.
bench_status=0
echo
echo "==== bench/run.sh --quick ===="
bench/run.sh --quick || bench_status=$?
if [ "$bench_status" -ne 0 ]; then
  echo "bench/run.sh --quick failed with status $bench_status"
  [ "$status" -ne 0 ] || status=$bench_status
fi

echo
echo "==== summary ===="
grep -E '^(     Running|   Doc-tests|test result:)' "$log" || true
passed=$( { grep -E '^test result:' "$log" || true; } | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
failed=$( { grep -E '^test result:' "$log" || true; } | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
ignored=$( { grep -E '^test result:' "$log" || true; } | sed -E 's/.* ([0-9]+) ignored.*/\1/' | awk '{s+=$1} END {print s+0}')
if grep -qE '^(error|warning: build failed)' "$log" && [ "$status" -ne 0 ] && [ "$passed" -eq 0 ]; then
  echo "cargo test failed before running tests (see errors above)"
fi
echo "total: $passed passed, $failed failed, $ignored skipped"
exit "$status"
