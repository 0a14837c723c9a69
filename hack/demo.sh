#!/usr/bin/env bash
# Runs the Tether demo until Ctrl-C. `make demo` builds bin/ first.
# It starts a local Kubernetes control plane (bin/controlplane), cloudcore,
# one edgecore (node demo-edge-1), applies manifests/demo/web.yaml and shows
# the pods Running on the edge node (the store's web pods, and a price lookup
# the store page calls by its Service's name through the edge's resolver and
# Service rules); then a Modbus thermostat and its mapper
# (manifests/demo/thermostat.yaml), with the thermostat's reported values in
# its Device status and a desired setpoint that reaches the device.
#
# The offline story, from another terminal while the demo runs (each acts on
# the running demo through the pids it keeps in .run/pids/):
#
#   hack/demo.sh status        what runs, the node and pods as the cloud and as the edge see them, the store page
#                              and its price lookup (by Service name)
#   hack/demo.sh cloud-down    stop cloudcore: the edge is cut off from the cloud
#   hack/demo.sh cloud-up      start cloudcore again; the edge reconnects and reports
#   hack/demo.sh down          stop everything (as Ctrl-C does, also after the demo was killed)
#   hack/demo.sh edge-restart  restart edgecore (SIGTERM, then start): the pods keep running
#   hack/demo.sh edge-reboot   cut the edge's power: SIGKILL edgecore, containerd, its shims and every
#                              pod process, the mapper and the thermostat; then boot: containerd
#                              (empty), edgecore, the thermostat and the mapper; edgecore runs the
#                              pods again from its store, with or without the cloud
#
# The demo keeps running when a component stops (by these commands or not);
# Ctrl-C stops everything.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run=${TETHER_RUN_DIR:-$root/.run}
# The Tether commands (make build puts them in bin/, beside the Kubernetes
# binaries that the control plane takes from bin/ in any case).
bin=${TETHER_DEMO_BIN:-$root/bin}
pids_dir=$run/pids
mkdir -p "$pids_dir"

# --- The components: each runs in its own session, its pid in
# $pids_dir/NAME.pid, so that any invocation of this script can stop and
# start it; none is a child of the demo's shell.

# alive PID: the process exists and is not a zombie.
alive() {
  [[ -n ${1:-} && -r /proc/$1/stat ]] && ! grep -q '^[0-9]* (.*) Z ' "/proc/$1/stat" 2>/dev/null
}
pid_of() { cat "$pids_dir/$1.pid" 2>/dev/null || true; }
running() { alive "$(pid_of "$1")"; }

# spawn NAME LOG CMD...: starts CMD detached, appending to LOG.
spawn() {
  local name=$1 log=$2
  shift 2
  (setsid "$@" >>"$log" 2>&1 </dev/null & echo $! >"$pids_dir/$name.pid")
}

# stop NAME [SIGNAL]: signals NAME and waits until it is gone (30s, then
# SIGKILL).
stop() {
  local name=$1 sig=${2:-TERM} pid
  pid=$(pid_of "$name")
  rm -f "$pids_dir/$name.pid" "$pids_dir/$name.exited"
  alive "$pid" || return 0
  kill -"$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 300); do
    alive "$pid" || return 0
    sleep 0.1
  done
  echo "demo: $name (pid $pid) still runs 30s after SIG$sig: SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

# wait_log NAME LOG FROM PATTERN: waits until LOG, past line FROM, holds
# PATTERN, or fails when NAME exits.
wait_log() {
  local name=$1 log=$2 from=$3 pattern=$4
  until tail -n +"$((from + 1))" "$log" 2>/dev/null | grep -q "$pattern"; do
    running "$name" || { echo "demo: $name exited:" >&2; tail -n 20 "$log" >&2; return 1; }
    sleep 0.2
  done
}
lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }

kubeconfig() { cat "$run/controlplane.ready" 2>/dev/null || true; }

# The edge's pod network: the same across containerd restarts (the edge's
# resolver answers it only).
pod_subnet=10.199.77.0/24
# The cluster's service range. While the demo runs it is a blackhole route
# on the host (its own metric: another's route of the range is left alone),
# so that a ClusterIP the edge does not route is dropped here, never sent
# out by the default route; the edge's rules act before routing.
service_range=10.96.0.0/12
blackhole_on() { ip route add blackhole "$service_range" metric 4218 2>/dev/null || true; }
blackhole_off() { ip route del blackhole "$service_range" metric 4218 2>/dev/null || true; }
# rules_off: edgecore's Service rules (nftables table inet tether) go, as in
# a power cut; edgecore puts them back from its store when it starts.
rules_off() { if [[ $EUID -eq 0 ]]; then "$bin/democontainerd" rules-off || true; fi; }
# The API server's kubelet traffic (kubectl logs, exec) goes through
# cloudcore's kubelet proxy on this socket, and on through the edge's tunnel.
egress_sock() { echo "$(cd "$run" && pwd)/egress.sock"; }

# kubectl top (as root): metrics-server is the API server's metrics.k8s.io
# API. The API server refuses loopback endpoints, so metrics-server gets
# 192.0.2.1 (TEST-NET-1, never routed) on a bridge of this host made for it
# (removed by stop_all). It scrapes the edge through cloudcore's kubelet
# proxy (kubeletProxyAddr, 127.0.0.1:10003) and checks the node's serving
# certificate with cloudcore's CA, written to $run/cloudcore-ca.crt once
# cloudcore made it; the API server reaches it through cloudcore too.
ms_link=tether-demo-ms
ms_addr=192.0.2.1
metrics_args=()
if [[ $EUID -eq 0 ]] && command -v ip >/dev/null; then
  metrics_args=(--metrics-server "$ms_addr" --metrics-server-wait "$run/cloudcore-ca.crt"
    "--metrics-server-arg=--kubelet-certificate-authority=$run/cloudcore-ca.crt"
    --metrics-server-arg=--kubelet-preferred-address-types=Hostname --metrics-server-arg=--metric-resolution=10s
    --metrics-server-arg=--kubelet-request-timeout=5s
    --metrics-server-env HTTPS_PROXY=http://127.0.0.1:10003 --metrics-server-env NO_PROXY=127.0.0.1,localhost)
fi
metrics_addr() {
  [[ ${#metrics_args[@]} -gt 0 ]] || return 0
  ip link del "$ms_link" 2>/dev/null || true
  ip link add "$ms_link" type bridge && ip addr add "$ms_addr/32" dev "$ms_link" && ip link set "$ms_link" up
}

start_controlplane() {
  rm -f "$run/controlplane.ready" "$run/cloudcore-ca.crt"
  metrics_addr
  # A node silent for 16s is NotReady (the default is 40s), so that the
  # cloud's view of an offline edge shows within the walk-through.
  spawn controlplane "$run/controlplane.log" "$bin/controlplane" --bin-dir "$root/bin" --dir "$run" --ready-file "$run/controlplane.ready" \
    --egress-socket "$(egress_sock)" --node-monitor-period 2s --node-monitor-grace-period 16s "${metrics_args[@]}"
  echo "demo: starting the control plane (log: $run/controlplane.log)"
  while [[ ! -s $run/controlplane.ready ]]; do
    running controlplane || { echo "demo: the control plane did not start:" >&2; tail -n 20 "$run/controlplane.log" >&2; return 1; }
    sleep 0.2
  done
}

# cloudcore: the hub on 127.0.0.1:10000. Its CA is kept in the Secret
# tether-system/tether-ca (created on first start), so a restarted cloudcore
# is the same cloud to the edge.
start_cloudcore() {
  local from
  from=$(lines "$run/cloudcore.log")
  # kubeletProxyAddr: metrics-server's way to the edge's kubelet API.
  printf 'kubeletProxyAddr: 127.0.0.1:10003\n' >"$run/cloudcore.yaml"
  spawn cloudcore "$run/cloudcore.log" "$bin/cloudcore" --config "$run/cloudcore.yaml" --kubeconfig "$(kubeconfig)" \
    --listen 127.0.0.1:10000 --kubelet-proxy-socket "$(egress_sock)"
  echo "demo: starting cloudcore (log: $run/cloudcore.log)"
  wait_log cloudcore "$run/cloudcore.log" "$from" "hub listening"
  if [[ ${#metrics_args[@]} -gt 0 && ! -s $run/cloudcore-ca.crt ]] && command -v kubectl >/dev/null; then
    KUBECONFIG=$(kubeconfig) kubectl -n tether-system get secret tether-ca -o jsonpath='{.data.tls\.crt}' |
      base64 -d >"$run/cloudcore-ca.crt.tmp" && mv "$run/cloudcore-ca.crt.tmp" "$run/cloudcore-ca.crt"
  fi
}

# The edge's container runtime: a private containerd with images built here
# (root, containerd, runc, CNI plugins and busybox-static needed). It starts
# empty, as after a reboot.
start_containerd() {
  rm -f "$run/containerd.ready"
  spawn containerd "$run/containerd.log" "$bin/democontainerd" --dir "$run/containerd" --ready-file "$run/containerd.ready" \
    --subnet "$pod_subnet"
  echo "demo: starting containerd and building the pause and busybox images (log: $run/containerd.log)"
  until [[ -s $run/containerd.ready ]]; do
    running containerd || { tail -n 20 "$run/containerd.log" >&2; return 1; }
    sleep 0.2
  done
}

start_edgecore() {
  spawn edgecore "$run/edgecore.log" "$bin/edgecore" --config "$run/edgecore.yaml"
  echo "demo: starting edgecore (log: $run/edgecore.log)"
}

# edgecore is up once its metaserver answers (its store is open, its pods
# are being synced).
wait_edgecore() {
  until curl -sf --max-time 1 http://127.0.0.1:10550/readyz >/dev/null 2>&1; do
    running edgecore || { echo "demo: edgecore exited:" >&2; tail -n 20 "$run/edgecore.log" >&2; return 1; }
    sleep 0.2
  done
}

# A Modbus device on the edge: "$bin/modbus-thermostat" plays a thermostat on
# 127.0.0.1:1502, and bin/modbus-mapper bridges it to the edge's device twin
# (devices from the metaserver on 127.0.0.1:10550, MQTT on edgecore's
# embedded broker on 127.0.0.1:1883). manifests/demo/thermostat.yaml
# describes it.
start_thermostat() {
  spawn thermostat "$run/thermostat.log" "$bin/modbus-thermostat" --addr 127.0.0.1:1502
}

# The mapper reads the metaserver with the token edgecore provisions for
# device mappers (devices and the node only; no pods, configmaps, secrets),
# and the broker as user "mapper-modbus" (edgecore.yaml's mapperProtocols),
# which may use the topics of the modbus devices only, with the password
# edgecore wrote at its first start into its data directory.
start_mapper() {
  local ms_token=$run/edge-1/credentials/metaserver-devices.token
  local mapper_pw=$run/edge-1/credentials/mqtt-mapper-modbus.password
  until [[ -s $ms_token && -s $mapper_pw ]]; do
    running edgecore || { tail -n 20 "$run/edgecore.log" >&2; return 1; }
    sleep 0.2
  done
  spawn modbus-mapper "$run/modbus-mapper.log" "$bin/modbus-mapper" --node demo-edge-1 \
    --metaserver-token-file "$ms_token" --username mapper-modbus --password-file "$mapper_pw"
  echo "demo: starting a Modbus thermostat and the Modbus mapper (logs: $run/thermostat.log, $run/modbus-mapper.log)"
}

cri_runtime() { grep -q '^runtime: cri' "$run/edgecore.yaml" 2>/dev/null; }

# edge_pods: the pods running on the edge as its containerd sees them,
# "<namespace>/<name> <uid> <ip>" (the cloud's view may be stale or away).
edge_pods() {
  cri_runtime && running containerd && "$bin/democontainerd" pods --dir "$run/containerd" 2>/dev/null || true
}

# store_page: the store's page from one of its pods, at the address the
# edge gives it now, and its price lookup (the pod calls the price Service
# by name).
store_page() {
  local ip
  ip=$(edge_pods | awk '$1 ~ /^default\/store-web-/ && $3 != "-" {print $3; exit}')
  [[ -n $ip ]] || { echo "(no store-web pod runs on the edge)"; return 1; }
  echo "http://$ip:8080/: $(curl -s --max-time 3 "http://$ip:8080/" | tr -d '\n' || true)"
  echo "http://$ip:8080/cgi-bin/price: $(curl -s --max-time 3 "http://$ip:8080/cgi-bin/price" | tr -d '\n' || true)"
}

# wait_store_pods N TIMEOUT: waits until N store-web pods run on the edge
# with an address and one of them serves the page.
wait_store_pods() {
  local n=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    if [[ $(edge_pods | awk '$1 ~ /^default\/store-web-/ && $3 != "-"' | wc -l) -ge $n ]] &&
      store_page 2>/dev/null | grep Store >/dev/null; then # grep -q would cut store_page short (pipefail)
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# power_off: what a power cut does to the edge: every process gone at once
# (SIGKILL, nothing stops cleanly), the pods' processes with them, and what
# lived in memory (containerd's state, tmpfs mounts, the pod bridge) lost.
power_off() {
  local pid p procs
  for c in modbus-mapper thermostat edgecore containerd; do
    pid=$(pid_of "$c")
    rm -f "$pids_dir/$c.pid" "$pids_dir/$c.exited"
    alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  done
  # containerd itself and its shims: their command lines name its directory.
  for p in $(grep -lasF -- "$run/containerd/" /proc/[0-9]*/cmdline); do
    p=${p#/proc/}
    [[ ${p%/cmdline} == "$BASHPID" ]] || kill -KILL "${p%/cmdline}" 2>/dev/null || true
  done
  # The pods' processes, in the pods' cgroups (cgroup v1 or v2).
  while read -r procs; do
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$procs"
  done < <(find /sys/fs/cgroup -path '*/tether-demo/*' -name cgroup.procs 2>/dev/null)
  # What a reboot clears: mounts (sandboxes' shm, memory volumes) and the
  # pod bridge.
  umount_run
  local bridge
  bridge=$(grep -ho '"bridge": *"[^"]*"' "$run"/containerd/cni-conf/* 2>/dev/null | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/')
  [[ -n $bridge ]] && ip link delete "$bridge" 2>/dev/null || true
  rules_off
}

# umount_run unmounts what the pods left under $run: sandboxes' shm and the
# memory volumes (secrets, service account tokens) edgecore mounted.
umount_run() {
  grep -oE " ($run/containerd|$run/edge-1)/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done || true # none: grep fails
}

# stop_all: every component, in the reverse order of the start.
stop_all() {
  for c in modbus-mapper thermostat edgecore containerd cloudcore controlplane; do
    stop "$c"
  done
  umount_run
  rules_off
  blackhole_off
  rm -f "$run/demo.pid" "$run/demo.ready"
  ip link del "$ms_link" 2>/dev/null || true
}

demo_running() { alive "$(cat "$run/demo.pid" 2>/dev/null || true)"; }

need_demo() {
  demo_running || { echo "demo: no demo is running (start it with make demo or hack/demo.sh)" >&2; exit 1; }
}

status() {
  local c pid
  echo "components:"
  for c in controlplane cloudcore containerd edgecore thermostat modbus-mapper; do
    pid=$(pid_of "$c")
    if alive "$pid"; then printf '  %-14s running (pid %s)\n' "$c" "$pid"; else printf '  %-14s stopped\n' "$c"; fi
  done
  if running controlplane && command -v kubectl >/dev/null; then
    echo "the cloud (kubectl):"
    KUBECONFIG=$(kubeconfig) kubectl --request-timeout=5s get node demo-edge-1 \
      -o custom-columns='NODE:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,REASON:.status.conditions[?(@.type=="Ready")].reason' 2>&1 | sed 's/^/  /'
    KUBECONFIG=$(kubeconfig) kubectl --request-timeout=5s get pods -l app=store-web \
      -o custom-columns='POD:.metadata.name,UID:.metadata.uid,PHASE:.status.phase,RESTARTS:.status.containerStatuses[0].restartCount,IP:.status.podIP' 2>&1 | sed 's/^/  /'
    if [[ ${#metrics_args[@]} -gt 0 ]] && running cloudcore; then
      echo "the edge's CPU and memory (kubectl top, through metrics-server and the tunnel):"
      KUBECONFIG=$(kubeconfig) kubectl --request-timeout=5s top pod -l app=store-web 2>&1 | sed 's/^/  /' || true
    fi
  fi
  if cri_runtime; then
    echo "the edge (its containerd):"
    edge_pods | sed 's/^/  /'
    echo "the store page:"
    store_page | sed 's/^/  /' || true
  fi
}

case ${1:-up} in
  up) ;;
  status)
    status
    exit 0
    ;;
  down)
    # Stops every component, also those of a demo that was killed.
    pid=$(cat "$run/demo.pid" 2>/dev/null || true)
    if alive "$pid"; then kill -TERM "$pid"; fi
    stop_all
    exit 0
    ;;
  cloud-down)
    need_demo
    stop cloudcore
    echo "demo: cloudcore stopped: the edge is offline; it keeps running its pods (hack/demo.sh status)"
    exit 0
    ;;
  cloud-up)
    need_demo
    running cloudcore && { echo "demo: cloudcore is already running"; exit 0; }
    start_cloudcore
    if command -v kubectl >/dev/null; then
      KUBECONFIG=$(kubeconfig) kubectl wait --for=condition=Ready node/demo-edge-1 --timeout=60s
    fi
    exit 0
    ;;
  edge-restart)
    need_demo
    stop edgecore
    start_edgecore
    wait_edgecore
    echo "demo: edgecore restarted; its pods ran on meanwhile:"
    edge_pods | sed 's/^/  /'
    exit 0
    ;;
  edge-reboot)
    need_demo
    power_off
    echo "demo: the edge lost power: edgecore, containerd, every pod, the mapper and the thermostat are gone"
    start=$SECONDS
    if cri_runtime; then start_containerd; fi
    edge_start=$SECONDS
    start_edgecore
    wait_edgecore
    start_thermostat
    start_mapper
    if cri_runtime; then
      if wait_store_pods 2 120; then
        echo "demo: the edge booted: pods back $((SECONDS - edge_start))s after edgecore started ($((SECONDS - start))s after power came back, containerd's start included)"
        edge_pods | sed 's/^/  /'
        store_page | sed 's/^/  /' || true
      else
        echo "demo: the store's pods are not back on the edge after 120s (see $run/edgecore.log)" >&2
        exit 1
      fi
    fi
    exit 0
    ;;
  *)
    echo "usage: hack/demo.sh [up|status|cloud-down|cloud-up|edge-restart|edge-reboot|down]" >&2
    exit 2
    ;;
esac

# --- up: start the demo and run until Ctrl-C.
if demo_running; then
  echo "demo: a demo is already running (pid $(cat "$run/demo.pid")): hack/demo.sh status" >&2
  exit 1
fi
for f in "$pids_dir"/*.pid; do
  if [[ -e $f ]] && alive "$(cat "$f")"; then
    echo "demo: stopping what a previous demo left running"
    stop_all
    break
  fi
done
echo $$ >"$run/demo.pid"
rm -f "$run/demo.ready" "$pids_dir"/*.exited
cleanup() {
  trap - INT TERM EXIT
  echo "demo: stopping"
  stop_all
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

# The control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler. Its data, certificates, kubeconfig and logs go to $run.
start_controlplane
kubeconfig=$(kubeconfig)
export KUBECONFIG=$kubeconfig

start_cloudcore

# The edge's runtime: containerd when it can run here, else the in-memory
# runtime, which runs nothing (asked for by name: cri is edgecore's default).
runtime_cfg="runtime: fake"
if [[ $EUID -eq 0 ]] && command -v containerd >/dev/null && [[ -x /bin/busybox ]]; then
  start_containerd
  read -r endpoint pause_image _ <"$run/containerd.ready"
  blackhole_on
  # The edge's resolver (on the node's address, port 53) answers the pods'
  # cluster names from the store; other names go to a closed loopback port
  # (the demo's pods ask none; nothing leaves the machine). With it, the
  # edge routes ClusterIPs (services.proxy's default).
  runtime_cfg="runtime: cri
cri:
  endpoint: $endpoint
  pauseImage: $pause_image
  podLogDir: $run/pod-logs
  cgroupParent: /tether-demo
dns:
  enable: true
  allowed: [$pod_subnet]
  upstreams: [127.0.0.1:9]"
else
  echo "demo: not root or containerd/busybox-static missing: the edge runs the in-memory runtime" >&2
fi

# One edge node. Its store is made anew with the control plane's data. It
# joins as an operator adds a board: a join token made on the cloud side
# (`cloudcore token create`, which prints the command to run on the board),
# then `edgecore join`, which checks the cloud's CA against the token, makes
# the node's key and writes its certificate and edgecore.yaml (keeping the
# settings below). It retries the cloud at most every 5s (reconnectMax), so
# that it is back soon after cloud-up.
umount_run # a demo that did not stop cleanly may have left its pods' volumes mounted
rm -rf "$run/edge-1" "$run/edge-pki"
cat >"$run/edgecore.yaml" <<EOF
dataDir: $run/edge-1
reconnectMax: 5s
labels:
  tether.io/site: demo-store
devices:
  mqtt:
    mapperProtocols: [modbus]   # user mapper-modbus: the modbus devices' topics only
$runtime_cfg
EOF
join_cmd=$("$bin/cloudcore" token create --kubeconfig "$kubeconfig" --cloud 127.0.0.1:10000 \
  --node demo-edge-1 --uses 1 --ttl 1h --description "tether demo")
echo "demo: cloudcore token create printed: ${join_cmd%%--token*}--token <token> ..."
read -r -a join_args <<<"$join_cmd"
if [[ ${join_args[0]:-} != edgecore || ${join_args[1]:-} != join ]]; then
  echo "demo: unexpected output of cloudcore token create: $join_cmd" >&2
  exit 1
fi
"$bin/${join_args[0]}" "${join_args[@]:1}" --config "$run/edgecore.yaml" --pki-dir "$run/edge-pki"
start_edgecore
start_thermostat
start_mapper

if command -v kubectl >/dev/null; then
  kubectl wait --for=condition=Ready node/demo-edge-1 --timeout=60s
  kubectl apply -f manifests/demo/web.yaml
  kubectl rollout status deployment/store-web --timeout=120s
  kubectl rollout status deployment/store-price --timeout=120s
  kubectl get nodes,pods -o wide
  pod_ip=$(kubectl get pods -l app=store-web -o jsonpath='{.items[0].status.podIP}')
  if [[ $runtime_cfg == "runtime: cri"* ]] && command -v curl >/dev/null; then
    echo "demo: curl http://$pod_ip:8080/ (served by busybox httpd in a container on the edge node):"
    curl -s --max-time 5 "http://$pod_ip:8080/" || true
    echo "demo: curl http://$pod_ip:8080/cgi-bin/price (the store pod asks the price Service by name):"
    for _ in $(seq 20); do # the Service's endpoint reaches the edge a moment after the rollout
      out=$(curl -s --max-time 5 "http://$pod_ip:8080/cgi-bin/price" || true)
      [[ $out == *EUR* ]] && break
      sleep 0.5
    done
    echo "$out"
  fi
  if [[ $runtime_cfg == "runtime: cri"* ]]; then
    # Through the tunnel: no port is open on the edge node.
    echo "demo: kubectl logs deployment/store-web --tail=3:"
    kubectl logs deployment/store-web --tail=3 || true
    echo "demo: kubectl exec deployment/store-web -- sh -c 'echo hello from \$(hostname)':"
    kubectl exec deployment/store-web -- sh -c 'echo hello from $(hostname)' || true
  fi
  # The thermostat: its reported values reach the Device status; a desired
  # setpoint set in the API server reaches its holding register.
  kubectl apply -f manifests/demo/thermostat.yaml
  twin() { kubectl get device thermostat-1 -o jsonpath="{.status.twins[?(@.propertyName==\"$1\")].reported.value}" 2>/dev/null || true; }
  temp=""
  for _ in $(seq 120); do
    temp=$(twin temperature)
    [[ -n $temp ]] && break
    sleep 0.5
  done
  kubectl get devices -o wide
  echo "demo: thermostat-1 reports temperature ${temp:-(nothing yet)} C, setpoint $(twin setpoint) C"
  echo "demo: kubectl patch device thermostat-1: desired setpoint 23.5"
  kubectl patch device thermostat-1 --type=json \
    -p '[{"op":"replace","path":"/spec/properties/1/desired/value","value":"23.5"}]'
  for _ in $(seq 120); do
    [[ $(twin setpoint) == 23.5 ]] && break
    sleep 0.5
  done
  echo "demo: thermostat-1 reports setpoint $(twin setpoint) C (the mapper wrote its register)"
else
  echo "demo: kubectl is not installed; the demo runs, but apply manifests/demo/web.yaml yourself" >&2
fi

cat <<MSG

Tether demo is running: the control plane, cloudcore and one edge node.

  export KUBECONFIG=$kubeconfig
  kubectl get nodes,pods -o wide
  kubectl scale deployment store-web --replicas=4
  kubectl logs -f deployment/store-web
  kubectl exec -it deployment/store-web -- sh
  kubectl top pod; kubectl top node demo-edge-1   # as root, some 20s after the start
  kubectl get devices
  kubectl get device thermostat-1 -o yaml

The offline story, from another terminal:

  hack/demo.sh status        # what runs; the node and pods as the cloud and the edge see them; the store page
  hack/demo.sh cloud-down    # the edge loses the cloud; the store page and its price lookup still answer
  hack/demo.sh edge-reboot   # power cut on the edge; its pods are back within seconds, without the cloud
  hack/demo.sh cloud-up      # the cloud returns: same pods, nothing evicted
  hack/demo.sh edge-restart  # edgecore restarts; the pods run on

Logs: $run/cloudcore.log, $run/edgecore.log, $run/logs/ (control plane),
$run/thermostat.log, $run/modbus-mapper.log
Press Ctrl-C to stop everything.
MSG
touch "$run/demo.ready"

# Until Ctrl-C. A component that stops is reported once, and the demo runs
# on: the commands above restart what they stop.
while :; do
  for f in "$pids_dir"/*.pid; do
    [[ -e $f ]] || continue
    c=$(basename "$f" .pid)
    if ! alive "$(cat "$f" 2>/dev/null || true)" && [[ -e $f ]]; then
      mv -f "$f" "$pids_dir/$c.exited" 2>/dev/null || continue
      echo "demo: $c stopped (log: $run/$c.log); the demo runs on: hack/demo.sh status" >&2
    fi
  done
  sleep 1
done
