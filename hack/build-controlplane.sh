#!/usr/bin/env bash
# Builds the local cluster from Go modules into a cache keyed by version: kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, and for the real node kubelet and kube-proxy
# (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3), helm (helm.sh/helm/v3), CoreDNS
# (github.com/coredns/coredns) and the pod sandbox process (localcluster/pause). No Docker, no
# release downloads: only the Go module proxy. Idempotent: a warm cache returns at once.
#
# Usage: hack/build-controlplane.sh            build what is missing, print the bin dir last
#        hack/build-controlplane.sh --print-dir print the bin dir only
set -euo pipefail

K8S_VERSION="${TASKBATCH_K8S_VERSION:-1.34.4}"
ETCD_VERSION="${TASKBATCH_ETCD_VERSION:-3.6.14}"
HELM_VERSION="${TASKBATCH_HELM_VERSION:-3.19.5}"
COREDNS_VERSION="${TASKBATCH_COREDNS_VERSION:-1.12.4}"
CACHE_ROOT="${TASKBATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskbatch}"
OUT="$CACHE_ROOT/cluster-k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION-helm-v$HELM_VERSION-coredns-v$COREDNS_VERSION/bin"
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
PAUSE_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../localcluster/pause" && pwd)"

if [[ "${1:-}" == "--print-dir" ]]; then echo "$OUT"; exit 0; fi

log() { printf '[build-controlplane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
need() { for b in "$@"; do [[ -x "$OUT/$b" ]] || return 0; done; return 1; }

command -v go >/dev/null || { log "go is not installed: install Go >= 1.24 (apt-get install -y golang) and run again"; exit 1; }
mkdir -p "$OUT"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# A separate, persistent work dir per wrapper module keeps go.sum between runs.
WORK="$CACHE_ROOT/gowork"
mkdir -p "$WORK"
START=$(date +%s)

build_k8s() {
  need "${K8S_CMDS[@]}" || { log "kubernetes v$K8S_VERSION binaries cached"; return; }
  local t0 minor staging w gomod
  t0=$(date +%s); minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"; staging="v0.${K8S_VERSION#1.}"
  w="$WORK/k8s-v$K8S_VERSION"; mkdir -p "$w"; cd "$w"
  # .resolved marks a wrapper module whose `go get`s all succeeded; anything else is redone.
  # .resolved holds the command list it was resolved for; a new command means resolving again.
  if [[ ! -f .resolved || "$(cat .resolved)" != "${K8S_CMDS[*]}" ]]; then
    rm -f go.mod go.sum tools.go .resolved
    log "creating wrapper module for k8s.io/kubernetes v$K8S_VERSION"
    go mod init example.invalid/taskbatch-k8sbins >/dev/null 2>&1
    gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    # Every staging module is required at the fake v0.0.0: route each to its published version.
    awk '$1 ~ /^k8s\.io\/[a-z0-9-]+$/ && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u | while read -r m; do
      go mod edit -replace="$m=$m@$staging"
    done
    log "resolving modules (downloads a few hundred MB on a cold machine)"
    go get "k8s.io/kubernetes@v$K8S_VERSION" >&2
    { printf '//go:build tools\n\npackage tools\n\nimport (\n'
      for c in "${K8S_CMDS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
      printf ')\n'; } > tools.go
    local pkgs=(); for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c@v$K8S_VERSION"); done
    go get "${pkgs[@]}" >&2
    # Guard against a resolution that moved kubernetes off the pinned version.
    local got; got=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
    [[ "$got" == "v$K8S_VERSION" ]] || { log "k8s.io/kubernetes resolved to $got, not v$K8S_VERSION"; exit 1; }
    echo "${K8S_CMDS[*]}" > .resolved
  fi
  local ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldf+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in "${K8S_CMDS[@]}"; do
    [[ -x "$OUT/$cmd" ]] && continue
    log "building $cmd v$K8S_VERSION"
    go build -trimpath -ldflags "$ldf" -o "$OUT/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$OUT/$cmd.tmp" "$OUT/$cmd"
  done
  log "kubernetes built in $(( $(date +%s) - t0 ))s"
}

build_etcd() {
  need etcd || { log "etcd v$ETCD_VERSION cached"; return; }
  local t0 w; t0=$(date +%s); w="$WORK/etcd-v$ETCD_VERSION"; mkdir -p "$w"; cd "$w"
  if [[ ! -f .resolved ]]; then
    rm -f go.mod go.sum
    go mod init example.invalid/taskbatch-etcdbin >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
    touch .resolved
  fi
  log "building etcd v$ETCD_VERSION"
  go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=gomod" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$OUT/etcd.tmp" "$OUT/etcd"
  log "etcd built in $(( $(date +%s) - t0 ))s"
}

build_helm() {
  need helm || { log "helm v$HELM_VERSION cached"; return; }
  local t0 w; t0=$(date +%s); w="$WORK/helm-v$HELM_VERSION"; mkdir -p "$w"; cd "$w"
  if [[ ! -f .resolved ]]; then
    rm -f go.mod go.sum
    go mod init example.invalid/taskbatch-helmbin >/dev/null 2>&1
    go get "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" >&2
    touch .resolved
  fi
  log "building helm v$HELM_VERSION"
  local minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
    -o "$OUT/helm.tmp" helm.sh/helm/v3/cmd/helm
  mv "$OUT/helm.tmp" "$OUT/helm"
  log "helm built in $(( $(date +%s) - t0 ))s"
}

build_coredns() {
  need coredns || { log "coredns v$COREDNS_VERSION cached"; return; }
  local t0 w; t0=$(date +%s); w="$WORK/coredns-v$COREDNS_VERSION"; mkdir -p "$w"; cd "$w"
  log "building coredns v$COREDNS_VERSION"
  GOBIN="$w/bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@v$COREDNS_VERSION" >&2
  mv "$w/bin/coredns" "$OUT/coredns"
  log "coredns built in $(( $(date +%s) - t0 ))s"
}

build_pause() {
  # Rebuilt whenever its source changes (it is tiny); the hash rides along as pause.sha256.
  local sum; sum=$(cat "$PAUSE_SRC/main.go" "$PAUSE_SRC/go.mod" | sha256sum | cut -d' ' -f1)
  [[ -x "$OUT/pause" && "$(cat "$OUT/pause.sha256" 2>/dev/null)" == "$sum" ]] && return
  (cd "$PAUSE_SRC" && go build -trimpath -ldflags "-s -w" -o "$OUT/pause.tmp" .)
  mv "$OUT/pause.tmp" "$OUT/pause"; echo "$sum" > "$OUT/pause.sha256"
  log "pause built"
}

# Locking keeps a test run and a demo run from building the same thing twice at once.
exec 9>"$CACHE_ROOT/.build.lock"
flock 9
build_pause
build_etcd
build_helm
build_k8s
build_coredns
log "cluster binaries ready in $OUT (total $(( $(date +%s) - START ))s)"
echo "$OUT"
