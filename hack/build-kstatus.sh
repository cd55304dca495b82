#!/usr/bin/env bash
# Build hack/kstatus (kstatus, the health library Flux uses, as a stdin -> JSON-lines filter) once
# per version and cache it. Idempotent and fast when cached; prints the binary's path.
#
#   hack/build-kstatus.sh                       # -> ~/.cache/vdc/bin/kstatus-cli-utils-<v>-<hash>/kstatus
#   hack/build-kstatus.sh --path                # only print where the binary belongs (no build)
#   kubectl get vm -A -o yaml | "$(hack/build-kstatus.sh)"
#
# The module (sigs.k8s.io/cli-utils and k8s.io/apimachinery) is pinned by hack/kstatus/go.mod and
# go.sum and built with -mod=readonly, so nothing floats. The cache directory carries the
# cli-utils version and a hash of the sources, so editing main.go or go.mod rebuilds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
src="$here/kstatus"
if ! grep -q "sigs.k8s.io/cli-utils v$CLI_UTILS_VERSION\$" "$src/go.mod"; then
  echo "[build-kstatus] hack/kstatus/go.mod does not require sigs.k8s.io/cli-utils v$CLI_UTILS_VERSION (hack/versions.env)" >&2
  exit 1
fi
cache=${VDC_CACHE:-$HOME/.cache/vdc}
hash=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
bin="$cache/bin/kstatus-cli-utils-$CLI_UTILS_VERSION-$hash"
if [ "${1:-}" = --path ] || [ -x "$bin/kstatus" ]; then echo "$bin/kstatus"; exit 0; fi
mkdir -p "$bin"
export PATH="$PATH:/usr/local/go/bin" GOTOOLCHAIN=local CGO_ENABLED=0
echo "[build-kstatus] go build sigs.k8s.io/cli-utils v$CLI_UTILS_VERSION kstatus -> $bin/kstatus" >&2
(cd "$src" && go build -mod=readonly -trimpath -ldflags="-s -w" -o "$bin/kstatus.tmp" .)
mv "$bin/kstatus.tmp" "$bin/kstatus"
echo "$bin/kstatus"
