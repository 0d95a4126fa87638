#!/usr/bin/env bash
# The README's first command: set up, build, and run the embedded-default demo.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$TASKBATCH_ROOT"
tsc -b
node dist/hack/demo-queue.js
