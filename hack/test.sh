#!/usr/bin/env bash
# The whole test suite: set-up, build + typecheck, then every jest tier.
# Prints jest's own summary and a plain closing line "jest: N passed, N failed[, N skipped]".
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$TASKBATCH_ROOT"
echo "[test] node $(node --version), redis $(redis-server --version | awk '{print $3}')"
echo "[test] building (tsc -b: compiles and typechecks)"
tsc -b
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
