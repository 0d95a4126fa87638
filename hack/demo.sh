#!/usr/bin/env bash
# The README's first command: set up (Node 24, Debian packages, npm packages, the control
# plane built from Go modules), build, and run the product end to end on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "[demo] building the local control plane (cached after the first run; ~9 minutes cold)"
TASKBATCH_CONTROLPLANE_BIN="$(bash hack/build-controlplane.sh | tail -1)"
export TASKBATCH_CONTROLPLANE_BIN
source hack/setup.sh
tsc -b
node dist/hack/demo.js "$@"
