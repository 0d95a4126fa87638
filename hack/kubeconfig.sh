#!/usr/bin/env bash
# Prints shell exports for the running local cluster (started by `node dist/localcluster/main.js`
# or any harness started with record: true), so kubectl/helm talk to it:
#   eval "$(hack/kubeconfig.sh)"; kubectl get nodes
# Also puts the built kubectl 1.34 and helm first on PATH. Exits 1 when no local cluster is running.
set -euo pipefail
CACHE_ROOT="${TASKBATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskbatch}"
STATE="$CACHE_ROOT/local-cluster"
if [[ ! -f "$STATE/env" || ! -f "$STATE/kubeconfig" ]]; then
  echo "no local cluster recorded in $STATE; start one with: node dist/localcluster/main.js" >&2
  exit 1
fi
# shellcheck disable=SC1091
source "$STATE/env"
if ! kill -0 "${TASKBATCH_LOCAL_CLUSTER_PID:-0}" 2>/dev/null; then
  echo "the local cluster recorded in $STATE (pid ${TASKBATCH_LOCAL_CLUSTER_PID:-?}) is not running" >&2
  exit 1
fi
printf 'export KUBECONFIG=%q\n' "$KUBECONFIG"
printf 'export PATH=%q:"$PATH"\n' "$TASKBATCH_CONTROLPLANE_BIN"
