#!/usr/bin/env bash
# Build the local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok) and helm (for the chart's tests) from Go modules into a cache directory outside the repository, and
# keep the traffic routers' CRDs (Istio, Gateway API) beside them, taken from the projects' own
# Go modules, so the local API server validates routing objects against the real schemas.
#
# Idempotent: a binary that already reports the wanted version is not rebuilt. Each build is
# timed. Nothing is downloaded except Go modules through the Go module proxy.
#
# Environment:
#   CANARY_CLUSTER_HOME  cache root (default: ~/.cache/canary-delivery/cluster)
#   K8S_VERSION, ETCD_VERSION, KWOK_VERSION, HELM_VERSION, ISTIO_API_VERSION, GATEWAY_API_VERSION
#                        override the pinned versions
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
ISTIO_API_VERSION=${ISTIO_API_VERSION:-v1.32.0}
# v1.7.0 needs a newer Go than this machine kind has.
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.3}
STAGING_VERSION=v0${K8S_VERSION#v1}

HOME_DIR=${CANARY_CLUSTER_HOME:-$HOME/.cache/canary-delivery/cluster}
BIN=$HOME_DIR/bin
SRC=$HOME_DIR/src
mkdir -p "$BIN" "$SRC"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw

command -v go >/dev/null || { echo "build-cluster: the Go toolchain (go 1.26 or newer) is required" >&2; exit 1; }
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -z "$go_minor" ] || [ "$go_minor" -lt 26 ]; then
  echo "build-cluster: Kubernetes $K8S_VERSION needs go 1.26 or newer; found $(go env GOVERSION)" >&2
  exit 1
fi

log() { printf '[build-cluster] %s\n' "$*"; }

timed() {
  local name=$1; shift
  local start=$SECONDS
  "$@"
  log "$name built in $((SECONDS - start)) s"
}

# has_version BINARY WANTED: the binary exists and its --version output names WANTED.
has_version() {
  [ -x "$BIN/$1" ] && "$BIN/$1" --version 2>/dev/null | grep -q -- "${2#v}"
}

build_kubernetes() {
  local dir=$SRC/k8s-$K8S_VERSION
  mkdir -p "$dir"; cd "$dir"
  [ -f go.mod ] || go mod init localcluster/k8s >/dev/null 2>&1
  local kmod
  kmod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # Every staging module is required at v0.0.0 and replaced by a path upstream; a consumer
  # must replace each with its published v0.N.P itself, before the first `go get`.
  local m
  for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/.*#\1#p' "$kmod"); do
    go mod edit -replace="$m=$m@$STAGING_VERSION"
  done
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
         "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
         "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags="$ldflags -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
  done
  go build -trimpath -ldflags "$ldflags" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
}

build_etcd() {
  local dir=$SRC/etcd-$ETCD_VERSION
  mkdir -p "$dir"; cd "$dir"
  [ -f go.mod ] || go mod init localcluster/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # The stage definitions ship inside the module; keep a copy beside the binaries.
  local mod
  mod=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION
  rm -rf "$HOME_DIR/kwok-stages"
  cp -r "$mod/kustomize/stage" "$HOME_DIR/kwok-stages"
  chmod -R u+w "$HOME_DIR/kwok-stages"
  echo "$KWOK_VERSION" > "$HOME_DIR/kwok-stages/VERSION"
}

# Helm is built inside a copy of its own module, so its go.mod (and its replace directives)
# decide the dependency versions, exactly as upstream's release build does.
build_helm() {
  local dir=$SRC/helm-$HELM_VERSION
  if [ ! -f "$dir/go.mod" ]; then
    local mod
    mod=$(module_dir "helm.sh/helm/v3@$HELM_VERSION")
    rm -rf "$dir.tmp"; cp -r "$mod" "$dir.tmp"; chmod -R u+w "$dir.tmp"; mv "$dir.tmp" "$dir"
  fi
  cd "$dir"
  go build -trimpath -buildvcs=false \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    -o "$BIN/helm" ./cmd/helm
}

helm_ready() {
  [ -x "$BIN/helm" ] && "$BIN/helm" version --short 2>/dev/null | grep -q -- "^$HELM_VERSION"
}

# module_dir MODULE@VERSION: where the Go module cache holds that module (downloaded if missing).
module_dir() {
  (cd "$SRC" && go mod download -json "$1") | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

# fetch_crds NAME MODULE VERSION PATH...: copy the module's CRD files into $HOME_DIR/crds/NAME,
# whole or not at all (a reader never sees half a set), with VERSION naming what is there.
fetch_crds() {
  local name=$1 module=$2 version=$3; shift 3
  local dir tmp=$HOME_DIR/crds/.$name.tmp
  dir=$(module_dir "$module@$version")
  rm -rf "$tmp"; mkdir -p "$tmp"
  local path
  for path in "$@"; do cp "$dir"/$path "$tmp/"; done
  chmod -R u+w "$tmp"
  echo "$version" > "$tmp/VERSION"
  rm -rf "$HOME_DIR/crds/$name"
  mv "$tmp" "$HOME_DIR/crds/$name"
}

crds_ready() {
  [ "$(cat "$HOME_DIR/crds/$1/VERSION" 2>/dev/null)" = "$2" ]
}

kwok_ready() {
  has_version kwok "$KWOK_VERSION" && [ "$(cat "$HOME_DIR/kwok-stages/VERSION" 2>/dev/null)" = "$KWOK_VERSION" ]
}

total_start=$SECONDS
if has_version etcd "$ETCD_VERSION"; then log "etcd $ETCD_VERSION up to date"; else timed "etcd $ETCD_VERSION" build_etcd; fi
if has_version kube-apiserver "$K8S_VERSION" && has_version kube-controller-manager "$K8S_VERSION" \
   && has_version kube-scheduler "$K8S_VERSION"; then
  log "kubernetes $K8S_VERSION up to date"
else
  timed "kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION" build_kubernetes
fi
if kwok_ready; then log "kwok $KWOK_VERSION up to date"; else timed "kwok $KWOK_VERSION" build_kwok; fi
if helm_ready; then log "helm $HELM_VERSION up to date"; else timed "helm $HELM_VERSION" build_helm; fi
mkdir -p "$HOME_DIR/crds"
if crds_ready istio "$ISTIO_API_VERSION"; then log "Istio CRDs $ISTIO_API_VERSION up to date"; else
  timed "Istio CRDs $ISTIO_API_VERSION" fetch_crds istio istio.io/api "$ISTIO_API_VERSION" \
    kubernetes/customresourcedefinitions.gen.yaml
fi
if crds_ready gateway-api "$GATEWAY_API_VERSION"; then log "Gateway API CRDs $GATEWAY_API_VERSION up to date"; else
  timed "Gateway API CRDs $GATEWAY_API_VERSION" fetch_crds gateway-api sigs.k8s.io/gateway-api "$GATEWAY_API_VERSION" \
    'config/crd/standard/*.yaml'
fi
log "all binaries ready in $BIN ($((SECONDS - total_start)) s)"
