#!/usr/bin/env bash
# Idempotent set-up shared by `make demo` and `make test`; source it:
#   source hack/setup.sh
# Provides Node.js 24 on PATH, the Debian packages the project runs for real (redis-server,
# prometheus, openssl; for the real node and the images: containerd, runc, the CNI plugins,
# iptables, conntrack, buildah, podman, skopeo, mmdebstrap; Debian's python3 for the stdio handler tests), and
# node_modules matching package-lock.json.
# Sourced: keep the caller's shell options; this file's own steps still stop on errors.
_taskbatch_saved_opts="$(set +o)"
set -euo pipefail
TASKBATCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TASKBATCH_ROOT
export TASKBATCH_CACHE="${TASKBATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskbatch}"
mkdir -p "$TASKBATCH_CACHE"

NODE_BIN="$("$TASKBATCH_ROOT/hack/ensure-node.sh")"
export PATH="$NODE_BIN:$TASKBATCH_ROOT/node_modules/.bin:$PATH"

missing=()
# command or file -> Debian package
for pair in redis-server:redis-server prometheus:prometheus openssl:openssl containerd:containerd runc:runc \
    /usr/lib/cni/bridge:containernetworking-plugins iptables:iptables conntrack:conntrack buildah:buildah \
    podman:podman skopeo:skopeo mmdebstrap:mmdebstrap nsenter:util-linux ip:iproute2 /usr/bin/python3:python3; do
  what="${pair%%:*}"; pkg="${pair#*:}"
  if [[ "$what" == /* ]]; then [[ -e "$what" ]] && continue; else PATH="$PATH:/usr/sbin:/sbin" command -v "$what" >/dev/null && continue; fi
  missing+=("$pkg")
done
if (( ${#missing[@]} )); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "[setup] missing Debian packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2; exit 1
  fi
  echo "[setup] installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
# Debian's packages start system services we do not use: the tests start their own servers.
for svc in redis-server prometheus prometheus-node-exporter containerd; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
done

stamp="$TASKBATCH_ROOT/node_modules/.taskbatch-lock-stamp"
if [[ ! -f "$stamp" ]] || ! cmp -s "$TASKBATCH_ROOT/package-lock.json" "$stamp"; then
  echo "[setup] installing npm packages (npm ci)" >&2
  (cd "$TASKBATCH_ROOT" && npm ci --no-audit --no-fund --loglevel=error >&2)
  cp "$TASKBATCH_ROOT/package-lock.json" "$stamp"
fi
eval "$_taskbatch_saved_opts"
unset _taskbatch_saved_opts
