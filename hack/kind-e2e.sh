#!/usr/bin/env bash
# The e2e tier on a kind cluster, for users with Docker (it cannot run on machines without a
# Docker engine, such as this project's CI, which runs the same tier on a real kubelet +
# containerd node instead: test/e2e/, run by `make test`).
#
# Builds the operator and worker images from the same Dockerfiles hack/build-images.sh builds
# (with Docker's default base, node:24-bookworm-slim), under the names and tag the chart's default
# values use (ghcr.io/taskbatch/{operator,worker}:<appVersion>), creates a fresh kind cluster,
# loads the images, and runs the e2e assertions (test/e2e/realnode.test.ts) against it: helm
# install with default values into a restricted namespace, every example to its documented end
# state, helm test, JSON logs, Service DNS, SIGTERM drain, /metrics, upgrade, uninstall.
#
#   hack/kind-e2e.sh                    everything, then delete the cluster
#   KEEP_CLUSTER=1 hack/kind-e2e.sh     keep it (kubectl --context kind-$KIND_CLUSTER ...)
#
# Environment: KIND_CLUSTER (default taskbatch-e2e), SKIP_BUILD=1 (reuse the images), KEEP_CLUSTER.
# Needs: docker, kind (https://kind.sigs.k8s.io), kubectl, helm 3, Node.js 24 + npm.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-taskbatch-e2e}"
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$ROOT/charts/taskbatch/Chart.yaml")"
OPERATOR_IMAGE="ghcr.io/taskbatch/operator:$APP_VERSION"
WORKER_IMAGE="ghcr.io/taskbatch/worker:$APP_VERSION"
REDIS_IMAGE="redis:7"

step() { printf '\n[kind-e2e] %s\n' "$*" >&2; }
for tool in docker kind kubectl helm node npm; do
  command -v "$tool" >/dev/null || { echo "[kind-e2e] $tool is required (see the header of $0)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "[kind-e2e] cannot reach a Docker engine (docker info failed)" >&2; exit 1; }

cd "$ROOT"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  step "building $OPERATOR_IMAGE and $WORKER_IMAGE"
  docker build -f Dockerfile.operator -t "$OPERATOR_IMAGE" .
  docker build -f Dockerfile.worker -t "$WORKER_IMAGE" .
  docker pull "$REDIS_IMAGE"
fi

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  step "deleting the earlier kind cluster $CLUSTER (the e2e tier wants a fresh one)"
  kind delete cluster --name "$CLUSTER"
fi
step "creating kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --wait 180s
cleanup() { [[ "${KEEP_CLUSTER:-0}" == 1 ]] || kind delete cluster --name "$CLUSTER"; }
trap cleanup EXIT
kubeconfig="$(mktemp)"
kind get kubeconfig --name "$CLUSTER" > "$kubeconfig"

step "loading the images into the cluster (never pulled: the chart's pull policy is IfNotPresent)"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$WORKER_IMAGE" "$REDIS_IMAGE"

step "running the e2e assertions against it"
[[ -d node_modules ]] || npm ci --no-audit --no-fund
npx tsc -b
TASKBATCH_E2E_KUBECONFIG="$kubeconfig" node --experimental-vm-modules --no-warnings node_modules/jest/bin/jest.js --ci --selectProjects e2e
