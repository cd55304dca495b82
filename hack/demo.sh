#!/usr/bin/env bash
# The built-in local datacenter: a real kube-apiserver, two libvirt hosts, the CRDs, the operator
# and the examples. `up` leaves it running (idempotent); `down` stops everything it started.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
export VDC_STATE=${VDC_STATE:-$top/.vdc}
export VDC_HOST_PREFIX=${VDC_HOST_PREFIX:-vdc-host}
HOSTS=${VDC_DEMO_HOSTS:-2}
# Kinds whose controllers exist: the demo waits for their examples to be Ready (the example
# ComputeCluster tolerates one host failure: Ready with two hosts or more).
RECONCILED_KINDS=${VDC_RECONCILED_KINDS:-host storagepool virtualswitch appliance virtualmachine$([ "$HOSTS" -lt 2 ] || echo " computecluster")}
log() { printf '[demo] %s\n' "$*" >&2; }

operator_pid() {
  local f="$VDC_STATE/operator.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

up() {
  mkdir -p "$VDC_STATE"
  "$here/controlplane.sh" up >/dev/null
  export KUBECONFIG="$VDC_STATE/controlplane/kubeconfig"
  bin=$(cat "$VDC_STATE/controlplane/bin")
  export PATH="$bin:$PATH"
  log "control plane up ($(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1))"

  "$here/libvirt-hosts.sh" up "$HOSTS" >/dev/null
  log "libvirt hosts up: $(awk '{print $1}' "$VDC_STATE/hosts/hosts.txt" | xargs)"

  kubectl apply --server-side -f "$top/crds" >/dev/null
  kubectl wait --for=condition=Established --timeout=60s crd -l app.kubernetes.io/part-of=vdc-operator >/dev/null
  log "CRDs installed"

  # One Host object per local libvirt host (their socket paths depend on this checkout).
  "$top/.venv/bin/python" - "$VDC_STATE/hosts/hosts.txt" <<'PY' | kubectl apply --server-side -f - >/dev/null
import sys, yaml
docs = []
for i, line in enumerate(open(sys.argv[1]).read().split("\n")):
    parts = line.split()
    if not parts:
        continue
    docs.append({"apiVersion": "vdc.dev/v1alpha1", "kind": "Host",
                 "metadata": {"name": parts[0], "labels": {"topology.kubernetes.io/zone": f"zone-{i % 2 + 1}",
                                                            "vdc.dev/driver": "qemu"}},
                 # The rig's hosts emulate (TCG): nested KVM is not dependable on build machines.
                 # hostFiles: the tiny guest's kernel and initrd (hack/libvirt-hosts.sh puts them there).
                 "spec": {"uri": parts[1], "virtualization": "Emulated", "cpuOvercommit": 4,
                          "hostFiles": {"allowedPaths": ["/var/lib/libvirt/boot/vdc-tiny"]},
                          **({"underlayAddress": parts[3]} if parts[3] != "-" else {})}})
print(yaml.safe_dump_all(docs))
PY
  log "Host objects applied"

  if [ -z "$(operator_pid)" ]; then
    port=$("$top/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    setsid nohup "$top/.venv/bin/vdc" run --metrics-address 127.0.0.1 --metrics-port "$port" \
      >"$VDC_STATE/operator.log" 2>&1 < /dev/null &
    echo $! > "$VDC_STATE/operator.pid"
    for _ in $(seq 1 60); do
      curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
      kill -0 "$(cat "$VDC_STATE/operator.pid")" 2>/dev/null || { tail -30 "$VDC_STATE/operator.log" >&2; exit 1; }
      sleep 0.5
    done
    log "operator running (pid $(cat "$VDC_STATE/operator.pid"), log $VDC_STATE/operator.log, metrics http://127.0.0.1:$port/metrics)"
  else
    log "operator already running (pid $(operator_pid))"
  fi

  "$here/example-appliance.sh" serve
  log "example appliance served ($("$here/example-appliance.sh" path))"
  for f in "$top"/examples/*.yaml; do
    kubectl apply --server-side -f "$f" >/dev/null
  done
  log "examples applied"
  for kind in $RECONCILED_KINDS; do
    log "waiting for every $kind to be Ready"
    kubectl wait --for=condition=Ready --timeout=300s -A "$kind" --all >/dev/null
  done

  # Live migration: move the tiny VM to the other host once (a re-run leaves it where it is).
  if [ "$HOSTS" -ge 2 ] && [ -z "$(kubectl get virtualmachinemigrations -n demo -o name 2>/dev/null)" ]; then
    log "live-migrating VM demo/tiny from $(kubectl get vm tiny -n demo -o jsonpath='{.status.host}') (vdc migrate --wait)"
    "$top/.venv/bin/vdc" migrate tiny -n demo --name tiny-moves --wait --timeout 300 ||
      log "the migration did not succeed: kubectl get vmim -n demo tiny-moves -o yaml"
  fi

  echo
  kubectl get vdc -A
  echo
  echo "The local datacenter is running. To use it:"
  echo "  export KUBECONFIG=$KUBECONFIG PATH=$bin:\$PATH"
  echo "  kubectl get vdc -A        # everything;  make down  # stop it all"
}

down() {
  local pid
  pid=$(operator_pid || true)
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$VDC_STATE/operator.pid"
  [ -x "$here/example-appliance.sh" ] && "$here/example-appliance.sh" stop || true
  [ -x "$here/libvirt-hosts.sh" ] && "$here/libvirt-hosts.sh" down >/dev/null || true
  [ -x "$here/controlplane.sh" ] && "$here/controlplane.sh" down >/dev/null || true
  log "stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
