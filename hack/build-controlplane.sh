#!/usr/bin/env bash
# Build the pinned kube-apiserver, kubectl, etcd and helm from the Go module proxy and cache them
# per version. Idempotent: a binary already in the cache is not rebuilt.
#
#   hack/build-controlplane.sh            # builds what is missing, prints the bin directory
#
# Debian and PyPI ship none of these, so they are built from source the way envtest's assets are:
# a throw-away Go module requires k8s.io/kubernetes at the pinned release and replaces every
# staging repository (required there as v0.0.0) with the matching v0.<minor>.<patch> release.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${VDC_CACHE:-$HOME/.cache/vdc}
bin="$cache/bin/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
mkdir -p "$bin"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
log() { printf '[build-controlplane] %s\n' "$*" >&2; }

build_module() {  # name, go.mod body, "binary=package@version"...
  local name=$1 body=$2; shift 2
  local dir="$cache/src/$name"
  mkdir -p "$dir"
  printf '%s\n' "$body" > "$dir/go.mod"
  printf 'package tools\n' > "$dir/tools.go"
  (cd "$dir" && go mod tidy >/dev/null 2>&1 || true)
  for pkg in "$@"; do
    local out="$bin/${pkg%%=*}"
    local versioned="${pkg#*=}"
    local src="${versioned%@*}"
    log "go build $versioned -> $out"
    # An explicit @version: a bare `go get` would upgrade to the newest release.
    (cd "$dir" && go get "$versioned" >/dev/null && go build -trimpath -ldflags="-s -w ${LDFLAGS_EXTRA:-}" -o "$out.tmp" "$src")
    mv "$out.tmp" "$out"
  done
}

need=()
for b in kube-apiserver kubectl etcd helm; do [ -x "$bin/$b" ] || need+=("$b"); done
if [ ${#need[@]} -eq 0 ]; then echo "$bin"; exit 0; fi
log "missing: ${need[*]} (first build takes a while; cached afterwards in $bin)"

k=v$KUBERNETES_VERSION
minor_patch=${KUBERNETES_VERSION#1.}
if [[ " ${need[*]} " == *" kube-apiserver "* || " ${need[*]} " == *" kubectl "* ]]; then
  gomod_json=$(cd /tmp && go mod download -json "k8s.io/kubernetes@$k")
  gomod=$(printf '%s' "$gomod_json" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging=$(sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) v0\.0\.0$#\1#p' "$gomod" | sort -u)
  replaces=$(for m in $staging; do printf 'replace %s => %s v0.%s\n' "$m" "$m" "$minor_patch"; done)
  gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
  body="module vdc.dev/hack/kubernetes

go $gover

require k8s.io/kubernetes $k

$replaces"
  LDFLAGS_EXTRA="-X k8s.io/component-base/version.gitVersion=$k -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor_patch%%.*} -X k8s.io/client-go/pkg/version.gitVersion=$k" \
    build_module kubernetes "$body" \
      "kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver@$k" "kubectl=k8s.io/kubernetes/cmd/kubectl@$k"
fi
if [[ " ${need[*]} " == *" etcd "* ]]; then
  build_module etcd "module vdc.dev/hack/etcd

go 1.24

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION" "etcd=go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
fi
if [[ " ${need[*]} " == *" helm "* ]]; then
  LDFLAGS_EXTRA="-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" build_module helm "module vdc.dev/hack/helm

go 1.24

require helm.sh/helm/v3 v$HELM_VERSION" "helm=helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
fi
echo "$bin"
