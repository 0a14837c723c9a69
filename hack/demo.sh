#!/usr/bin/env bash
# Runs the Tether demo until Ctrl-C. `make demo` builds bin/ first.
# It starts a local Kubernetes control plane (bin/controlplane), cloudcore,
# one edgecore (node demo-edge-1), applies manifests/demo/web.yaml and shows
# the pods Running on the edge node; then a Modbus thermostat and its mapper
# (manifests/demo/thermostat.yaml), with the thermostat's reported values in
# its Device status and a desired setpoint that reaches the device.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run=${TETHER_RUN_DIR:-$root/.run}
mkdir -p "$run"

pids=()
stop_all() {
  trap - INT TERM EXIT
  # Reverse start order; each component stops its own children.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap stop_all INT TERM EXIT

# The control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler. Its data, certificates, kubeconfig and logs go to $run.
rm -f "$run/controlplane.ready"
# The API server's kubelet traffic (kubectl logs, exec) goes through
# cloudcore's kubelet proxy on this socket, and on through the edge's tunnel.
egress_sock=$(cd "$run" && pwd)/egress.sock
bin/controlplane --dir "$run" --egress-socket "$egress_sock" --ready-file "$run/controlplane.ready" >"$run/controlplane.log" 2>&1 &
pids+=($!)
echo "demo: starting the control plane (log: $run/controlplane.log)"
while [[ ! -s $run/controlplane.ready ]]; do
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "demo: the control plane did not start:" >&2
    tail -n 20 "$run/controlplane.log" >&2
    exit 1
  fi
  sleep 0.2
done
kubeconfig=$(cat "$run/controlplane.ready")

export KUBECONFIG=$kubeconfig

# cloudcore: the hub on 127.0.0.1:10000. Its CA is kept in the Secret
# tether-system/tether-ca (created on first start).
bin/cloudcore --kubeconfig "$kubeconfig" --listen 127.0.0.1:10000 --kubelet-proxy-socket "$egress_sock" >"$run/cloudcore.log" 2>&1 &
pids+=($!)
echo "demo: starting cloudcore (log: $run/cloudcore.log)"
until grep -q "hub listening" "$run/cloudcore.log"; do
  kill -0 "${pids[-1]}" 2>/dev/null || { tail -n 20 "$run/cloudcore.log" >&2; exit 1; }
  sleep 0.2
done

# The edge's container runtime: a private containerd with images built here
# (root, containerd, runc, CNI plugins and busybox-static needed), else the
# in-memory runtime, which runs nothing.
runtime_cfg="runtime: fake"
if [[ $EUID -eq 0 ]] && command -v containerd >/dev/null && [[ -x /bin/busybox ]]; then
  rm -f "$run/containerd.ready"
  bin/democontainerd --dir "$run/containerd" --ready-file "$run/containerd.ready" >"$run/containerd.log" 2>&1 &
  pids+=($!)
  echo "demo: starting containerd and building the pause and busybox images (log: $run/containerd.log)"
  until [[ -s $run/containerd.ready ]]; do
    kill -0 "${pids[-1]}" 2>/dev/null || { tail -n 20 "$run/containerd.log" >&2; exit 1; }
    sleep 0.2
  done
  read -r endpoint pause_image _ <"$run/containerd.ready"
  runtime_cfg="runtime: cri
cri:
  endpoint: $endpoint
  pauseImage: $pause_image
  podLogDir: $run/pod-logs
  cgroupParent: /tether-demo"
else
  echo "demo: not root or containerd/busybox-static missing: the edge runs the in-memory runtime" >&2
fi

# One edge node. Its store is made anew with the control plane's data. It
# joins as an operator adds a board: a join token made on the cloud side
# (`cloudcore token create`, which prints the command to run on the board),
# then `edgecore join`, which checks the cloud's CA against the token, makes
# the node's key and writes its certificate and edgecore.yaml (keeping the
# settings below).
rm -rf "$run/edge-1" "$run/edge-pki"
cat >"$run/edgecore.yaml" <<EOF
dataDir: $run/edge-1
labels:
  tether.io/site: demo-store
$runtime_cfg
EOF
join_cmd=$(bin/cloudcore token create --kubeconfig "$kubeconfig" --cloud 127.0.0.1:10000 \
  --node demo-edge-1 --uses 1 --ttl 1h --description "tether demo")
echo "demo: cloudcore token create printed: ${join_cmd%%--token*}--token <token> ..."
read -r -a join_args <<<"$join_cmd"
if [[ ${join_args[0]:-} != edgecore || ${join_args[1]:-} != join ]]; then
  echo "demo: unexpected output of cloudcore token create: $join_cmd" >&2
  exit 1
fi
bin/"${join_args[@]}" --config "$run/edgecore.yaml" --pki-dir "$run/edge-pki"
bin/edgecore --config "$run/edgecore.yaml" >"$run/edgecore.log" 2>&1 &
pids+=($!)
echo "demo: starting edgecore (log: $run/edgecore.log)"

# A Modbus device on the edge: bin/modbus-thermostat plays a thermostat on
# 127.0.0.1:1502, and bin/modbus-mapper bridges it to the edge's device twin
# (devices from the metaserver on 127.0.0.1:10550, MQTT on edgecore's
# embedded broker on 127.0.0.1:1883). manifests/demo/thermostat.yaml
# describes it. The broker wants credentials: edgecore writes the mappers'
# password at its first start into its data directory
# ($run/edge-1/credentials/mqtt-mapper.password, user "mapper").
bin/modbus-thermostat --addr 127.0.0.1:1502 >"$run/thermostat.log" 2>&1 &
pids+=($!)
# The mapper reads the metaserver with the token edgecore provisions for
# device mappers (devices and the node only; no pods, configmaps, secrets),
# and the broker as user "mapper" with the password edgecore wrote.
ms_token=$run/edge-1/credentials/metaserver-devices.token
mapper_pw=$run/edge-1/credentials/mqtt-mapper.password
until [[ -s $ms_token && -s $mapper_pw ]]; do
  kill -0 "${pids[-2]}" 2>/dev/null || { tail -n 20 "$run/edgecore.log" >&2; exit 1; }
  sleep 0.2
done
bin/modbus-mapper --node demo-edge-1 --metaserver-token-file "$ms_token" --username mapper --password-file "$mapper_pw" \
  >"$run/modbus-mapper.log" 2>&1 &
pids+=($!)
echo "demo: starting a Modbus thermostat and the Modbus mapper (logs: $run/thermostat.log, $run/modbus-mapper.log)"

if command -v kubectl >/dev/null; then
  kubectl wait --for=condition=Ready node/demo-edge-1 --timeout=60s
  kubectl apply -f manifests/demo/web.yaml
  kubectl rollout status deployment/store-web --timeout=120s
  kubectl get nodes,pods -o wide
  pod_ip=$(kubectl get pods -l app=store-web -o jsonpath='{.items[0].status.podIP}')
  if [[ $runtime_cfg == "runtime: cri"* ]] && command -v curl >/dev/null; then
    echo "demo: curl http://$pod_ip:8080/ (served by busybox httpd in a container on the edge node):"
    curl -s --max-time 5 "http://$pod_ip:8080/" || true
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
  kubectl get devices
  kubectl get device thermostat-1 -o yaml

Logs: $run/cloudcore.log, $run/edgecore.log, $run/logs/ (control plane),
$run/thermostat.log, $run/modbus-mapper.log
Press Ctrl-C to stop everything.
MSG

# Until Ctrl-C or until a component exits.
set +e
wait -n "${pids[@]}"
status=$?
set -e
if [[ $status -ne 0 && $status -lt 128 ]]; then
  echo "demo: a component exited (status $status); see the logs in $run" >&2
fi
