#!/usr/bin/env bash
# A local Kubernetes API the way controller-runtime's envtest runs one: etcd + kube-apiserver only
# (no kubelet, no controller-manager, no scheduler), secure port only, real client-cert
# authentication and RBAC authorization.
#
#   hack/controlplane.sh up       # start (idempotent); last stdout line: export KUBECONFIG=...
#   hack/controlplane.sh down     # stop kube-apiserver then etcd, remove the etcd data dir
#   hack/controlplane.sh status   # exit 0 when up and ready, 1 otherwise
#   hack/controlplane.sh env      # print the export line when up, exit 1 otherwise
#
# Everything lives in $VDC_STATE/controlplane (VDC_STATE defaults to <repo>/.vdc): PKI, kubeconfig,
# pid files, ports, logs (etcd.log, kube-apiserver.log) and a file `bin` holding the directory of the
# matching kubectl/helm. Ports are free loopback ports picked at start, so several state dirs can be
# up at the same time.
#
# Environment:
#   VDC_STATE                      state root (default <repo>/.vdc)
#   VDC_CP_START_TIMEOUT           seconds to wait for /readyz (default 90)
#   VDC_CP_STOP_TIMEOUT            seconds to wait after SIGTERM before SIGKILL (default 15)
#   VDC_APISERVER_EXTRA_ARGS       extra kube-apiserver flags (word-split)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
state_root=${VDC_STATE:-$repo/.vdc}
mkdir -p "$state_root"
state_root=$(cd "$state_root" && pwd)
state="$state_root/controlplane"
pki="$state/pki"
datadir="$state/etcd-data"
kubeconfig="$state/kubeconfig"
etcd_log="$state/etcd.log"
apiserver_log="$state/kube-apiserver.log"
start_timeout=${VDC_CP_START_TIMEOUT:-90}
stop_timeout=${VDC_CP_STOP_TIMEOUT:-15}

log() { printf '[controlplane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  cat >&2 <<EOF
usage: $(basename "$0") up|down|status|env

  up      start etcd + kube-apiserver (no-op when already up); prints 'export KUBECONFIG=...' last
  down    stop kube-apiserver then etcd and remove the etcd data dir; safe when nothing runs
  status  report state; exit 0 when up and ready, 1 otherwise
  env     print 'export KUBECONFIG=...' when up; exit 1 otherwise

state dir: \$VDC_STATE/controlplane (VDC_STATE defaults to <repo>/.vdc; now $state)
EOF
}

export_line() { printf 'export KUBECONFIG=%q\n' "$kubeconfig"; }

lock() {  # serialise up/down/status on one state dir
  mkdir -p "$state"
  exec 9>"$state/lock"
  flock -w 300 9 || die "could not lock $state/lock"
}

# --- processes -----------------------------------------------------------------------------------

# running PID: the process exists and is not a zombie.
running() {
  local stat
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  { IFS= read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# is_ours PID NAME: PID is running NAME and its command line mentions this state dir.
is_ours() {
  local pid=$1 name=$2 args=()
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  { mapfile -d '' args <"/proc/$pid/cmdline"; } 2>/dev/null || return 1
  [ "${#args[@]}" -gt 0 ] || return 1
  [ "${args[0]##*/}" = "$name" ] || return 1
  [[ "${args[*]}" == *"$state/"* ]] || return 1
  running "$pid"
}

pid_of() {  # NAME -> pid from the pid file when it is still ours
  local f="$state/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(<"$f")
  is_ours "$pid" "$1" && echo "$pid"
}

# Every process named NAME whose command line mentions this state dir (covers lost pid files).
scan_pids() {
  local name=$1 d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    is_ours "$pid" "$name" && echo "$pid"
  done
  return 0
}

stop_one() {  # NAME
  local name=$1 pids pid deadline
  pids=$( { pid_of "$name" || true; scan_pids "$name"; } | sort -u)
  if [ -n "$pids" ]; then
    log "stopping $name (pid $(echo "$pids" | tr '\n' ' ' | sed 's/ $//'))"
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + stop_timeout))
    for pid in $pids; do
      while is_ours "$pid" "$name"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
          log "$name (pid $pid) still running after ${stop_timeout}s, sending SIGKILL"
          kill -KILL "$pid" 2>/dev/null || true
          sleep 0.2
          is_ours "$pid" "$name" && sleep 1
          break
        fi
        sleep 0.1
      done
    done
  fi
  rm -f "$state/$name.pid"
}

# --- health --------------------------------------------------------------------------------------

bin_dir() {
  local out
  out=$("$here/build-controlplane.sh" | tail -n 1) || die "hack/build-controlplane.sh failed"
  for b in kube-apiserver kubectl etcd helm; do
    [ -x "$out/$b" ] || die "$out/$b missing (hack/build-controlplane.sh output: $out)"
  done
  echo "$out"
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s "$@"; }

ready() {  # both processes ours and alive, /readyz ok
  [ -f "$kubeconfig" ] && [ -f "$state/bin" ] || return 1
  BIN=$(<"$state/bin")
  [ -x "$BIN/kubectl" ] || return 1
  pid_of etcd >/dev/null && pid_of kube-apiserver >/dev/null || return 1
  [ "$(kubectl_ get --raw /readyz 2>/dev/null)" = ok ]
}

# --- start ---------------------------------------------------------------------------------------

free_ports() {  # N -> N distinct free loopback ports (all bound at once so they differ)
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

gen_pki() {
  rm -rf "$pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  (
    cd "$pki"
    ecparam() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    ecparam ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=vdc-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out ca.crt 2>/dev/null

    cat >apiserver.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    ecparam apiserver.key
    openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null

    cat >admin.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
    ecparam admin.key
    openssl req -new -key admin.key -subj "/O=system:masters/CN=vdc-admin" -out admin.csr 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
      -extfile admin.ext -out admin.crt 2>/dev/null

    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext ca.srl
    chmod 600 ./*.key
  ) || die "openssl failed generating the PKI in $pki"
}

write_kubeconfig() {  # PORT
  local b64='base64 -w0' tmp="$kubeconfig.tmp"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vdc-local
  cluster:
    server: https://127.0.0.1:$1
    certificate-authority-data: $($b64 <"$pki/ca.crt")
users:
- name: vdc-admin
  user:
    client-certificate-data: $($b64 <"$pki/admin.crt")
    client-key-data: $($b64 <"$pki/admin.key")
contexts:
- name: vdc-local
  context:
    cluster: vdc-local
    user: vdc-admin
current-context: vdc-local
EOF
  chmod 600 "$tmp"
  mv "$tmp" "$kubeconfig"
}

spawn() {  # NAME LOGFILE CMD... : start detached (own session, no inherited lock fd), record pid
  local name=$1 logfile=$2; shift 2
  setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  echo $! >"$state/$name.pid"
}

fail_with_log() {  # NAME LOGFILE MESSAGE
  log "$1 failed: $3"
  log "last lines of $2:"
  tail -n 40 "$2" >&2 || true
}

etcd_healthy() {  # PORT: GET /health over bash's /dev/tcp (no curl needed)
  local resp
  # shellcheck disable=SC2016  # $1 expands in the inner shell
  resp=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
    printf "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 && cat <&3' _ "$1" 2>/dev/null) ||
    return 1
  [[ $resp == *'"health":"true"'* ]]
}

port_clash() { grep -qiE 'address already in use' "$1" 2>/dev/null; }

# try_start: 0 ready, 1 fatal failure, 2 port clash (caller retries with new ports)
try_start() {
  local etcd_client etcd_peer api_port deadline
  etcd_client='' etcd_peer='' api_port=''
  read -r etcd_client etcd_peer api_port < <(free_ports 3) || true
  if [ -z "$api_port" ]; then log "could not pick free ports"; return 1; fi
  printf 'ETCD_CLIENT_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\n' \
    "$etcd_client" "$etcd_peer" "$api_port" >"$state/ports"
  rm -rf "$datadir"
  mkdir -p "$datadir"
  chmod 700 "$datadir"
  : >"$etcd_log"
  : >"$apiserver_log"

  spawn etcd "$etcd_log" "$BIN/etcd" \
    --name=vdc \
    --data-dir="$datadir" \
    --listen-client-urls="http://127.0.0.1:$etcd_client" \
    --advertise-client-urls="http://127.0.0.1:$etcd_client" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="vdc=http://127.0.0.1:$etcd_peer" \
    --initial-cluster-state=new \
    --unsafe-no-fsync=true

  # wait until etcd serves (has a leader) before starting the apiserver: no dial-retry noise in
  # its log, and an etcd that cannot start is reported as such
  deadline=$((SECONDS + 30))
  until etcd_healthy "$etcd_client"; do
    if ! running "$(<"$state/etcd.pid")"; then
      port_clash "$etcd_log" && return 2
      fail_with_log etcd "$etcd_log" "exited during startup"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail_with_log etcd "$etcd_log" "not healthy on port $etcd_client after 30s"
      return 1
    fi
    sleep 0.1
  done

  local -a extra=()
  # shellcheck disable=SC2206  # word splitting of the extra flags is intended
  [ -n "${VDC_APISERVER_EXTRA_ARGS:-}" ] && extra=(${VDC_APISERVER_EXTRA_ARGS})
  spawn kube-apiserver "$apiserver_log" "$BIN/kube-apiserver" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$api_port" \
    --cert-dir="$pki" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --authorization-mode=RBAC \
    --service-cluster-ip-range=10.0.0.0/24 \
    --etcd-servers="http://127.0.0.1:$etcd_client" \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --disable-admission-plugins=ServiceAccount \
    --profiling=false \
    "${extra[@]}"

  write_kubeconfig "$api_port"

  deadline=$((SECONDS + start_timeout))
  until [ "$(kubectl_ get --raw /readyz 2>/dev/null)" = ok ]; do
    if ! running "$(<"$state/kube-apiserver.pid")"; then
      port_clash "$apiserver_log" && return 2
      fail_with_log kube-apiserver "$apiserver_log" "exited during startup"
      return 1
    fi
    if ! running "$(<"$state/etcd.pid")"; then
      fail_with_log etcd "$etcd_log" "exited while kube-apiserver was starting"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail_with_log kube-apiserver "$apiserver_log" "/readyz not ok after ${start_timeout}s"
      log "/readyz?verbose says:"
      kubectl_ get --raw '/readyz?verbose' >&2 2>&1 || true
      return 1
    fi
    sleep 0.2
  done

  # kube-apiserver's system-namespaces controller creates default/kube-system/kube-public/
  # kube-node-lease shortly after start; make sure `default` exists before reporting ready.
  deadline=$((SECONDS + 10))
  until kubectl_ get namespace default >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "namespace default missing, creating it"
      kubectl_ create namespace default >/dev/null 2>&1 || kubectl_ get namespace default >/dev/null ||
        { log "could not create namespace default"; return 1; }
      break
    fi
    sleep 0.2
  done
  return 0
}

cmd_up() {
  lock
  if ready; then
    log "already up ($(grep APISERVER_PORT "$state/ports" 2>/dev/null || true))"
    export_line
    return 0
  fi
  BIN=$(bin_dir)
  # leftovers of a previous, unhealthy run
  stop_one kube-apiserver
  stop_one etcd
  printf '%s\n' "$BIN" >"$state/bin"
  gen_pki
  local attempt rc started=$SECONDS
  for attempt in 1 2 3; do
    rc=0
    try_start || rc=$?
    [ "$rc" -eq 0 ] && break
    stop_one kube-apiserver
    stop_one etcd
    rm -f "$kubeconfig"
    if [ "$rc" -eq 2 ] && [ "$attempt" -lt 3 ]; then
      log "port clash, retrying with other ports"
      continue
    fi
    [ "$rc" -eq 2 ] && log "port clash on every attempt"
    rm -rf "$datadir"
    exit 1
  done
  log "up in $((SECONDS - started))s: kube-apiserver https://127.0.0.1:$(sed -n 's/^APISERVER_PORT=//p' "$state/ports") (pid $(pid_of kube-apiserver)), etcd pid $(pid_of etcd)"
  log "logs: $etcd_log $apiserver_log"
  export_line
}

cmd_down() {
  lock
  stop_one kube-apiserver
  stop_one etcd
  rm -rf "$datadir" "$pki"
  rm -f "$kubeconfig" "$state/ports"
  log "down"
}

cmd_status() {
  local e a
  e=$(pid_of etcd || true)
  a=$(pid_of kube-apiserver || true)
  if ready; then
    echo "up"
    echo "etcd: pid $e"
    echo "kube-apiserver: pid $a"
    sed 's/^/  /' "$state/ports"
    echo "bin: $(<"$state/bin")"
    export_line
    return 0
  fi
  if [ -n "$e$a" ]; then
    echo "unhealthy: etcd pid ${e:-none}, kube-apiserver pid ${a:-none}, /readyz not ok (see $state/*.log)"
  else
    echo "down"
  fi
  return 1
}

cmd_env() {
  if ready; then export_line; return 0; fi
  log "control plane in $state is not up (run: hack/controlplane.sh up)"
  return 1
}

[ $# -eq 1 ] || { usage; exit 2; }
case $1 in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  -h|--help|help) usage ;;
  *) usage; exit 2 ;;
esac
