#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl (one Kubernetes release, one module graph) and helm, from the
# Go module proxy, into a cache outside the repo keyed by version. A binary that exists is never rebuilt.
# `node` adds what a kubelet-backed single-node cluster needs (scripts/cluster): kube-controller-manager,
# kube-scheduler, kubelet and kube-proxy from the same wrapper module, and the CNI plugins.
#
# Why a wrapper module: `go install k8s.io/kubernetes/cmd/...@v` refuses modules with replace directives,
# and k8s.io/kubernetes points its staging modules at ./staging. Our own go.mod requires the release and
# replaces every staging module with the published v0.Y.Z; a main module's replaces are obeyed.
#
# Usage: scripts/k8s-bins/build.sh [k8s|helm|node|cni|all]   # builds what is missing, prints the bin dir
# Env:   MODELROUTE_CACHE (default ~/.cache/modelroute), K8S_VERSION, HELM_VERSION, CNI_VERSION
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
CACHE="${MODELROUTE_CACHE:-$HOME/.cache/modelroute}"
K8S_BIN="$CACHE/k8s/$K8S_VERSION"
HELM_RECIPE=r2
# r2: helm's release ldflags for the Kubernetes version it assumes (r1 built without them and assumed 1.20)
HELM_BIN="$CACHE/helm/$HELM_VERSION-$HELM_RECIPE"
CNI_VERSION="${CNI_VERSION:-v1.10.0}"
CNI_BIN="$CACHE/cni/$CNI_VERSION"
CNI_PLUGINS=(main/bridge main/loopback ipam/host-local meta/portmap)
CONTROL_BINS=(kube-apiserver etcd kubectl)
NODE_BINS=(kube-controller-manager kube-scheduler kubelet kube-proxy)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf '[k8s-bins] %s\n' "$*" >&2; }

missing() {  # the names among "$@" without an executable in $K8S_BIN
  local b; for b in "$@"; do [[ -x "$K8S_BIN/$b" ]] || echo "$b"; done
}

# One wrapper module for every binary of the release: its go.mod requires k8s.io/kubernetes and
# replaces each staging module with the published v0.Y.Z; tools.go imports every main package so that
# `go mod tidy` resolves one graph for all of them (etcd at the version the release requires).
wrapper() {
  local work="$1" staging_version="v0.${K8S_VERSION#v1.}"
  local tools
  tools=$(
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "go.etcd.io/etcd/server/v3"\n'
    for b in kube-apiserver kubectl "${NODE_BINS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
    printf ')\n'
  )
  if [[ -f "$work/go.mod" && -f "$work/tools.go" && "$(cat "$work/tools.go")" == "$tools" ]]; then
    return
  fi
  mkdir -p "$work"
  (
    cd "$work"
    # The staging list is whatever the pinned release's own go.mod replaces with ./staging paths.
    local upstream_gomod
    upstream_gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    {
      echo "module modelroute.dev/k8s-bins"
      echo
      echo "go 1.24"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$upstream_gomod" \
        | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
    } > go.mod
    echo "$tools" > tools.go
    # No `go get` of etcd: tidy keeps it at the version the pinned release requires, so the whole
    # graph (grpc, otel, ...) stays the one upstream tested.
    go mod tidy >&2
  )
}

build_bins() {  # build_bins NAME... : the Kubernetes binaries (or etcd) among NAME that are missing
  local todo; todo=$(missing "$@")
  [[ -n "$todo" ]] || return 0
  local work="$CACHE/k8s/build-$K8S_VERSION"
  mkdir -p "$K8S_BIN"
  log "building $(echo $todo) for Kubernetes $K8S_VERSION (first run on this machine: 10-25 min, ~2 GiB memory)"
  wrapper "$work"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  local b pkg flags
  for b in $todo; do
    if [[ "$b" == etcd ]]; then pkg=go.etcd.io/etcd/server/v3 flags="-s -w"
    else pkg="k8s.io/kubernetes/cmd/$b" flags="$ldflags"; fi
    (cd "$work" && go build -trimpath -ldflags "$flags" -o "$K8S_BIN/$b.tmp" "$pkg") \
      && mv -f "$K8S_BIN/$b.tmp" "$K8S_BIN/$b" || { log "$b build failed"; exit 1; }
  done
}

build_k8s() { build_bins "${CONTROL_BINS[@]}"; }

build_node() { build_bins "${NODE_BINS[@]}"; }

build_cni() {
  local p todo=()
  for p in "${CNI_PLUGINS[@]}"; do [[ -x "$CNI_BIN/${p##*/}" ]] || todo+=("$p"); done
  [[ ${#todo[@]} -gt 0 ]] || return 0
  log "building CNI plugins $CNI_VERSION: ${todo[*]##*/}"
  mkdir -p "$CNI_BIN"
  # The plugins module has no replace directives, so `go install pkg@version` works as it is.
  for p in "${todo[@]}"; do
    GOBIN="$CNI_BIN" go install -trimpath -ldflags "-s -w" \
      "github.com/containernetworking/plugins/plugins/$p@$CNI_VERSION" >&2
  done
}

build_helm() {
  [[ -x "$HELM_BIN/helm" ]] && return
  mkdir -p "$HELM_BIN"
  log "building helm $HELM_VERSION"
  # As helm's Makefile does: the Kubernetes version helm assumes when it has no cluster to ask (template,
  # lint) is the one its client-go implements, v0.Y -> 1.Y. Without it helm says 1.20.
  local src client_go kube_minor
  src="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  client_go="$(awk '$1 == "k8s.io/client-go" { print $2 }' "$src/go.mod")"
  kube_minor="$(echo "$client_go" | cut -d. -f2)"
  [[ -n "$kube_minor" ]] || { log "cannot read helm's client-go version from $src/go.mod"; exit 1; }
  local flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
  done
  GOBIN="$HELM_BIN" go install -trimpath -ldflags "$flags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
}

case "${1:-all}" in
  k8s) build_k8s; echo "$K8S_BIN" ;;
  helm) build_helm; echo "$HELM_BIN" ;;
  node) build_k8s; build_node; echo "$K8S_BIN" ;;
  cni) build_cni; echo "$CNI_BIN" ;;
  all) build_k8s; build_helm; echo "$K8S_BIN" ;;
  *) echo "usage: $0 [k8s|helm|node|cni|all]" >&2; exit 2 ;;
esac
