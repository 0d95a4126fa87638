#!/usr/bin/env bash
# Runs the reproducible benchmarks (`make bench`). See bench/README.md for what each one measures.
#
#   hack/bench.sh                 # all: queue-drain, queue-memory, then worker-modes if present
#   hack/bench.sh queue           # the queue protocol only (queue-drain + queue-memory)
#   hack/bench.sh queue-drain -- --n 200000 --rounds 5 --profile
#   hack/bench.sh operator -- --n 10,100   # the operator under N TaskBatches (not in "all": ~15 min)
#   BENCH_N=100000 BENCH_ROUNDS=3 BENCH_MEM_N=1000000 BENCH_BULL_MEM_N=200000 hack/bench.sh queue
#
# Each benchmark starts its own redis-server on a free loopback port (no persistence) and stops it.
# Output is also written to .tmp/bench/<name>-<UTC time>.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=hack/setup.sh
source hack/setup.sh

targets=()
extra=()
while (($#)); do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(all)

expanded=()
for t in "${targets[@]}"; do
  case "$t" in
    all) expanded+=(queue-drain queue-memory worker-modes) ;;
    queue) expanded+=(queue-drain queue-memory) ;;
    worker) expanded+=(worker-modes) ;;
    queue-drain|queue-memory|queue-acl|worker-modes|operator) expanded+=("$t") ;;
    *) echo "[bench] unknown benchmark '$t' (use: all, queue, queue-drain, queue-memory, queue-acl, worker, operator)" >&2; exit 2 ;;
  esac
done
if ((${#extra[@]})) && ((${#expanded[@]} != 1)); then
  echo "[bench] arguments after -- need exactly one benchmark (e.g. hack/bench.sh queue-drain -- --n 200000)" >&2; exit 2
fi

# Other work in progress may not typecheck; tsc still emits. Only errors in the benchmarks we run stop us.
echo "[bench] tsc -b" >&2
if ! tsc_out="$(tsc -b 2>&1)"; then
  pattern="$(printf '%s|' "${expanded[@]}")"
  if grep -E "^bench/(${pattern%|}|queue-lib|operator-kubelet|operator-plot)\.ts" <<<"$tsc_out" >&2; then
    echo "[bench] the benchmarks above do not typecheck" >&2; exit 1
  fi
  echo "[bench] tsc -b reported $(grep -c 'error TS' <<<"$tsc_out" || true) error(s) outside the benchmarks run here; continuing with the emitted output" >&2
fi

mkdir -p .tmp/bench
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
status=0
for b in "${expanded[@]}"; do
  if [[ ! -f "bench/$b.ts" ]]; then
    [[ " ${targets[*]} " == *" all "* ]] && { echo "[bench] bench/$b.ts not present; skipped" >&2; continue; }
    echo "[bench] bench/$b.ts not found" >&2; exit 2
  fi
  out=".tmp/bench/$b-$stamp.txt"
  echo "[bench] node --expose-gc dist/bench/$b.js ${extra[*]-}   (output also in $out)" >&2
  if ! node --expose-gc "dist/bench/$b.js" "${extra[@]}" | tee "$out"; then status=1; fi
  echo
done
exit "$status"
