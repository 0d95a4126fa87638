#!/usr/bin/env bash
# Lint, format and dependency rules; hack/test.sh runs this right after `tsc -b`, so `make test`
# fails on a violation. One verdict line per tool; a failure shows the tool's findings (file and
# line) and the command that fixes or explains it. A few seconds in all.
#
#   biome format   formatting (biome.jsonc: 2 spaces, single quotes, semicolons, trailing commas, 200 columns)
#   biome lint     Biome's recommended rules, minus the ones biome.jsonc turns off and says why
#   knip           unused files, exports and dependencies (knip.jsonc lists the entry points)
#   depcruise      README.md's layering ("Dependencies point one way"; .dependency-cruiser.cjs)
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${TASKBATCH_ROOT:-}" ]] || ! command -v biome >/dev/null; then source hack/setup.sh; fi

# Checks that report but do not fail yet (being introduced one at a time).
NOT_ENFORCED=" "

rc=0
check() { # id, how to fix, command...
  local id=$1 fix=$2; shift 2
  local out code start=$SECONDS
  out="$("$@" 2>&1)"; code=$?
  if (( code == 0 )); then
    echo "[lint] $id: ok ($((SECONDS - start)) s)"
  elif [[ "$NOT_ENFORCED" == *" $id "* ]]; then
    echo "[lint] $id: findings, not enforced yet (see: $fix)"
  else
    printf '%s\n' "$out" | tail -n 80 >&2
    echo "[lint] $id: FAILED; fix: $fix" >&2
    rc=1
  fi
}
check biome-format 'run: npx biome format --write .  (then review and commit the changed files)' \
  biome format --max-diagnostics=30 .
check biome-lint 'run: npx biome lint --write .  for the safe fixes, the rest by hand; a rule that must be off goes in biome.jsonc with the reason' \
  biome lint --error-on-warnings --max-diagnostics=50 .
check knip 'delete the unused export/file/dependency, or drop "export" when only its own module uses it; entry points are in knip.jsonc (run: npx knip)' \
  knip --no-progress
check depcruise 'import through the layer README.md allows (each rule above says which); run: npx depcruise --config .dependency-cruiser.cjs --output-type err-long api kube queue worker operator sdk cli localcluster examples bench hack test' \
  depcruise --config .dependency-cruiser.cjs --output-type err-long api kube queue worker operator sdk cli localcluster examples bench hack test
exit $rc
