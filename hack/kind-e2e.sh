#!/usr/bin/env bash
# End to end on a kind cluster, for users with Docker (it cannot run on machines without a
# Docker engine, such as this project's CI): builds the operator and worker images, creates a
# kind cluster (or reuses it), loads the images, installs the Helm chart with its bundled
# Redis, runs an example TaskBatch, waits for Complete, and runs `helm test`.
#
#   hack/kind-e2e.sh              # everything
#   KEEP_CLUSTER=0 hack/kind-e2e.sh   # delete the cluster at the end
#
# Environment: KIND_CLUSTER (default taskbatch), TAG (default dev), NAMESPACE (default
# taskbatch-system), SKIP_BUILD=1 (reuse the images), KEEP_CLUSTER (default 1).
# Needs: docker, kind (https://kind.sigs.k8s.io), kubectl, helm 3.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-taskbatch}"
TAG="${TAG:-dev}"
NAMESPACE="${NAMESPACE:-taskbatch-system}"
RELEASE=taskbatch
OPERATOR_IMAGE="ghcr.io/taskbatch/operator:$TAG"
WORKER_IMAGE="ghcr.io/taskbatch/worker:$TAG"
BATCH_NS=default
BATCH=hello-kind

step() { printf '\n[kind-e2e] %s\n' "$*" >&2; }
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "[kind-e2e] $tool is required (see the header of $0)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "[kind-e2e] cannot reach a Docker engine (docker info failed)" >&2; exit 1; }

cd "$ROOT"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  step "building $OPERATOR_IMAGE and $WORKER_IMAGE"
  docker build -f Dockerfile.operator -t "$OPERATOR_IMAGE" .
  docker build -f Dockerfile.worker -t "$WORKER_IMAGE" .
fi

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  step "reusing kind cluster $CLUSTER"
else
  step "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 180s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "loading the images into the cluster"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$WORKER_IMAGE"

step "installing the chart (release $RELEASE in namespace $NAMESPACE, bundled Redis)"
# The images exist only in the cluster's nodes: never pull them (worker pods get IfNotPresent,
# the default for a tag other than latest).
helm upgrade --install "$RELEASE" charts/taskbatch \
  --namespace "$NAMESPACE" --create-namespace \
  --set operator.image.tag="$TAG" --set operator.image.pullPolicy=Never \
  --set worker.image.tag="$TAG" \
  --wait --timeout 5m
kubectl -n "$NAMESPACE" rollout status "deployment/$RELEASE" --timeout=2m

step "running TaskBatch $BATCH_NS/$BATCH (500 items, async pool, up to 3 workers)"
kubectl -n "$BATCH_NS" delete taskbatch "$BATCH" --ignore-not-found --wait=true
kubectl -n "$BATCH_NS" apply -f - <<YAML
apiVersion: taskbatch.dev/v1alpha1
kind: TaskBatch
metadata:
  name: $BATCH
spec:
  range: {start: 0, end: 500}
  handler: {builtin: sleep}
  pool: {mode: async, size: 8}
  workers: {max: 3, itemsPerWorker: 100}
YAML
kubectl -n "$BATCH_NS" wait --for=condition=Complete "taskbatch/$BATCH" --timeout=10m || {
  kubectl -n "$BATCH_NS" get taskbatch "$BATCH" -o yaml >&2
  kubectl -n "$NAMESPACE" logs "deployment/$RELEASE" --tail=50 >&2
  exit 1
}
kubectl -n "$BATCH_NS" get taskbatch "$BATCH" -o wide

step "helm test"
helm test "$RELEASE" --namespace "$NAMESPACE" --timeout 5m

if [[ "${KEEP_CLUSTER:-1}" == 0 ]]; then
  step "deleting kind cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER"
else
  step "done; the cluster stays (kubectl --context kind-$CLUSTER ...). Remove it with: kind delete cluster --name $CLUSTER"
fi
