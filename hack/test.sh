#!/usr/bin/env bash
# The whole test suite: set-up, build + typecheck, lint/format/dependency rules (hack/lint.sh),
# every jest tier, then the real-node e2e tier. A lint failure does not stop the tests; it fails
# the run at the end.
# Prints jest's own summaries and a plain closing line "jest: N passed, N failed[, N skipped]".
#
#   hack/test.sh                       everything
#   hack/test.sh --selectProjects unit one tier (arguments go to jest; the e2e tier runs only when
#                                      selected by name or when no arguments are given)
set -euo pipefail
# The cluster binaries' build (tens of minutes cold, seconds warm) runs alongside the rest of set-up.
logdir="${TMPDIR:-/tmp}"
cp_log="$logdir/taskbatch-build-controlplane.log"
img_log="$logdir/taskbatch-build-images.log"
bash "$(dirname "$0")/build-controlplane.sh" >"$cp_log" 2>&1 &
cp_pid=$!
source "$(dirname "$0")/setup.sh"
cd "$TASKBATCH_ROOT"

run_e2e=1
if (( $# > 0 )); then run_e2e=0; [[ " $* " == *" e2e "* || " $* " == *"--selectProjects=e2e"* ]] && run_e2e=1; fi
img_pid=
if (( run_e2e )); then
  # The images (a Debian base, the operator, worker, Redis and pause images) build in the
  # background too; they need the pause binary the control-plane build makes first.
  bash hack/build-images.sh >"$img_log" 2>&1 &
  img_pid=$!
fi

echo "[test] node $(node --version), redis $(redis-server --version | awk '{print $3}')"
echo "[test] building (tsc -b: compiles and typechecks)"
tsc -b
echo "[test] lint, format and dependency rules (hack/lint.sh)"
lint_rc=0
bash hack/lint.sh || lint_rc=1
echo "[test] waiting for the cluster binaries' build (log: $cp_log)"
if ! wait "$cp_pid"; then
  tail -40 "$cp_log" >&2
  echo "[test] building the cluster binaries failed; see $cp_log" >&2
  exit 1
fi
TASKBATCH_CONTROLPLANE_BIN="$(tail -1 "$cp_log")"
export TASKBATCH_CONTROLPLANE_BIN
echo "[test] cluster binaries: $TASKBATCH_CONTROLPLANE_BIN"

jest() {
  node --experimental-vm-modules --no-warnings "$TASKBATCH_ROOT/node_modules/jest/bin/jest.js" --ci --json --outputFile="$1" "${@:2}"
}
results=()
rc=0
if (( $# > 0 )); then
  # An explicit selection: one jest run with exactly those arguments.
  out="$TASKBATCH_ROOT/dist/jest-results.json"; rm -f "$out"
  if (( run_e2e )); then
    wait "$img_pid" || { tail -40 "$img_log" >&2; echo "[test] building the images failed; see $img_log" >&2; exit 1; }
    TASKBATCH_IMAGES_DIR="$(tail -1 "$img_log")"; export TASKBATCH_IMAGES_DIR
  fi
  set +e; jest "$out" "$@"; rc=$?; set -e
  results+=("$out")
else
  out="$TASKBATCH_ROOT/dist/jest-results.json"; rm -f "$out"
  set +e; jest "$out" --selectProjects unit integration cluster; rc=$?; set -e
  results+=("$out")
  echo "[test] waiting for the images' build (log: $img_log)"
  if wait "$img_pid"; then
    TASKBATCH_IMAGES_DIR="$(tail -1 "$img_log")"; export TASKBATCH_IMAGES_DIR
    echo "[test] images: $TASKBATCH_IMAGES_DIR"
  else
    tail -40 "$img_log" >&2
    echo "[test] building the images failed; see $img_log" >&2
    rc=1
  fi
  if [[ -n "${TASKBATCH_IMAGES_DIR:-}" ]]; then
    out_e2e="$TASKBATCH_ROOT/dist/jest-results-e2e.json"; rm -f "$out_e2e"
    echo "[test] e2e tier: a real node, the built images, the Helm chart"
    set +e; jest "$out_e2e" --selectProjects e2e --runInBand; e2e_rc=$?; set -e
    (( e2e_rc == 0 )) || rc=$e2e_rc
    results+=("$out_e2e")
  fi
fi

if (( lint_rc != 0 )); then
  echo "[test] hack/lint.sh failed (see its [lint] lines above, each with the fix): the run fails" >&2
  rc=1
fi
node -e '
  let passed = 0, failed = 0, skipped = 0, total = 0, brokenSuites = 0, missing = 0;
  for (const f of process.argv.slice(1)) {
    let r;
    try { r = JSON.parse(require("fs").readFileSync(f, "utf8")); } catch { missing++; continue; }
    passed += r.numPassedTests; failed += r.numFailedTests; skipped += r.numPendingTests + r.numTodoTests;
    total += r.numTotalTests;
    if (r.numFailedTestSuites > 0 && r.numFailedTests === 0) brokenSuites += r.numFailedTestSuites;
  }
  console.log(`jest: ${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""));
  if (missing) { console.error(`${missing} jest run(s) wrote no results`); process.exit(1); }
  if (total === 0) { console.error("no tests ran"); process.exit(1); }
  if (brokenSuites) console.error(`${brokenSuites} test suite(s) failed to run`);
' "${results[@]}" || rc=1
exit $rc
