#!/usr/bin/env bash
# The OVA of examples/appliance-tiny.yaml: built from the tiny guest (tests/appliances.py, cached)
# and served on the loopback address and port the example names.
#
#   hack/example-appliance.sh path    # build it (cached) and print its path
#   hack/example-appliance.sh serve   # serve it (idempotent); pid in $VDC_STATE/appliance-server.pid
#   hack/example-appliance.sh stop
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
state=${VDC_STATE:-$top/.vdc}
py=$top/.venv/bin/python
url=$(grep -o 'http://127.0.0.1:[0-9]*/[A-Za-z0-9._-]*' "$top/examples/appliance-tiny.yaml" | head -1)
port=${url#http://127.0.0.1:}; port=${port%%/*}
name=${url##*/}

build() {
  "$py" -c 'import sys; sys.path.insert(0, sys.argv[1]); import appliances; print(appliances.build_ova())' "$top/tests"
}

case "${1:-}" in
  path) build ;;
  serve)
    pidfile=$state/appliance-server.pid
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then exit 0; fi
    dir=$state/appliance-www
    mkdir -p "$dir"
    ln -sf "$(build)" "$dir/$name"
    setsid nohup "$py" -m http.server "$port" --bind 127.0.0.1 --directory "$dir" \
      >"$state/appliance-server.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 1 40); do curl -fsI "$url" >/dev/null 2>&1 && exit 0; sleep 0.25; done
    echo "example-appliance: $url does not answer (see $state/appliance-server.log)" >&2; exit 1 ;;
  stop)
    pidfile=$state/appliance-server.pid
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi ;;
  *) echo "usage: $0 path|serve|stop" >&2; exit 2 ;;
esac
