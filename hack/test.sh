#!/usr/bin/env bash
# The whole test suite: set-up, build + typecheck, then every jest tier.
# Prints jest's own summary and a plain closing line "jest: N passed, N failed[, N skipped]".
set -euo pipefail
# The control-plane build (tens of minutes cold, seconds warm) runs alongside the rest of set-up.
cp_log="${TMPDIR:-/tmp}/taskbatch-build-controlplane.log"
bash "$(dirname "$0")/build-controlplane.sh" >"$cp_log" 2>&1 &
cp_pid=$!
source "$(dirname "$0")/setup.sh"
cd "$TASKBATCH_ROOT"
echo "[test] node $(node --version), redis $(redis-server --version | awk '{print $3}')"
echo "[test] building (tsc -b: compiles and typechecks)"
tsc -b
echo "[test] waiting for the control-plane build (log: $cp_log)"
if ! wait "$cp_pid"; then
  tail -40 "$cp_log" >&2
  echo "[test] building the control plane failed; see $cp_log" >&2
  exit 1
fi
TASKBATCH_CONTROLPLANE_BIN="$(tail -1 "$cp_log")"
export TASKBATCH_CONTROLPLANE_BIN
echo "[test] control plane binaries: $TASKBATCH_CONTROLPLANE_BIN"
results="$TASKBATCH_ROOT/dist/jest-results.json"
rm -f "$results"
set +e
node --experimental-vm-modules --no-warnings "$TASKBATCH_ROOT/node_modules/jest/bin/jest.js" \
  --ci --json --outputFile="$results" "$@"
rc=$?
set -e
if [[ -f "$results" ]]; then
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const skipped = r.numPendingTests + r.numTodoTests;
    console.log(`jest: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
    if (r.numTotalTests === 0) { console.error("no tests ran"); process.exit(1); }
    if (r.numFailedTestSuites > 0 && r.numFailedTests === 0) console.error(`${r.numFailedTestSuites} test suite(s) failed to run`);
  ' "$results" || rc=1
fi
exit $rc
