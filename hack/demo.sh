#!/usr/bin/env bash
# The README's first command: set up (Node 24, Debian packages, npm packages, the cluster
# binaries built from Go modules), build, and run the product end to end on this machine.
#   hack/demo.sh                 node agent (pods as local processes): fastest
#   hack/demo.sh --real-node     a real kubelet + containerd node, the built images, the Helm chart
set -euo pipefail
cd "$(dirname "$0")/.."
echo "[demo] building the cluster binaries (cached after the first run; ~12 minutes cold)"
TASKBATCH_CONTROLPLANE_BIN="$(bash hack/build-controlplane.sh | tail -1)"
export TASKBATCH_CONTROLPLANE_BIN
source hack/setup.sh
tsc -b
if [[ " $* " == *" --real-node "* ]]; then
  echo "[demo] building the images (cached after the first run; a few minutes cold)"
  TASKBATCH_IMAGES_DIR="$(bash hack/build-images.sh | tail -1)"
  export TASKBATCH_IMAGES_DIR
fi
node dist/hack/demo.js "$@"
