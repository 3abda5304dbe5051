#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl (one Kubernetes release, one module graph) and helm, from the
# Go module proxy, into a cache outside the repo keyed by version. A binary that exists is never rebuilt.
#
# Why a wrapper module: `go install k8s.io/kubernetes/cmd/...@v` refuses modules with replace directives,
# and k8s.io/kubernetes points its staging modules at ./staging. Our own go.mod requires the release and
# replaces every staging module with the published v0.Y.Z; a main module's replaces are obeyed.
#
# Usage: scripts/k8s-bins/build.sh            # builds what is missing, prints the bin directory
# Env:   MODELROUTE_CACHE (default ~/.cache/modelroute), K8S_VERSION, HELM_VERSION
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
CACHE="${MODELROUTE_CACHE:-$HOME/.cache/modelroute}"
K8S_BIN="$CACHE/k8s/$K8S_VERSION"
HELM_RECIPE=r2
# r2: helm's release ldflags for the Kubernetes version it assumes (r1 built without them and assumed 1.20)
HELM_BIN="$CACHE/helm/$HELM_VERSION-$HELM_RECIPE"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf '[k8s-bins] %s\n' "$*" >&2; }

build_k8s() {
  if [[ -x "$K8S_BIN/kube-apiserver" && -x "$K8S_BIN/etcd" && -x "$K8S_BIN/kubectl" ]]; then
    return
  fi
  local work="$CACHE/k8s/build-$K8S_VERSION"
  mkdir -p "$work" "$K8S_BIN"
  log "building Kubernetes $K8S_VERSION (first run on this machine: 10-25 min, ~2 GiB memory)"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging_version="v0.${K8S_VERSION#v1.}"
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
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    # No `go get` of etcd: tidy keeps it at the version the pinned release requires, so the whole
    # graph (grpc, otel, ...) stays the one upstream tested.
    go mod tidy >&2
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
    [[ -x "$K8S_BIN/kube-apiserver" ]] || go build -trimpath -ldflags "$ldflags" -o "$K8S_BIN/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver && mv -f "$K8S_BIN/kube-apiserver.tmp" "$K8S_BIN/kube-apiserver" 2>/dev/null || true
    [[ -x "$K8S_BIN/kubectl" ]] || { go build -trimpath -ldflags "$ldflags" -o "$K8S_BIN/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl && mv -f "$K8S_BIN/kubectl.tmp" "$K8S_BIN/kubectl"; }
    [[ -x "$K8S_BIN/etcd" ]] || { go build -trimpath -ldflags "-s -w" -o "$K8S_BIN/etcd.tmp" go.etcd.io/etcd/server/v3 && mv -f "$K8S_BIN/etcd.tmp" "$K8S_BIN/etcd"; }
  )
  [[ -x "$K8S_BIN/kube-apiserver" ]] || { log "kube-apiserver build failed"; exit 1; }
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
  all) build_k8s; build_helm; echo "$K8S_BIN" ;;
  *) echo "usage: $0 [k8s|helm|all]" >&2; exit 2 ;;
esac
