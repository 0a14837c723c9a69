#!/usr/bin/env bash
# Runs the Tether demo until Ctrl-C. `make demo` builds bin/ first.
# It starts a local Kubernetes control plane (bin/controlplane), cloudcore,
# one edgecore (node demo-edge-1), applies manifests/demo/web.yaml and shows
# the pods Running on the edge node.
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
bin/controlplane --dir "$run" --ready-file "$run/controlplane.ready" >"$run/controlplane.log" 2>&1 &
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

# cloudcore: the hub on 127.0.0.1:10000, certificates made in $run/cloudcore.
token_file=$run/bootstrap-token
[[ -s $token_file ]] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$token_file"
rm -rf "$run/cloudcore/pki"
bin/cloudcore --kubeconfig "$kubeconfig" --listen 127.0.0.1:10000 --data-dir "$run/cloudcore" \
  --token-file "$token_file" >"$run/cloudcore.log" 2>&1 &
pids+=($!)
echo "demo: starting cloudcore (log: $run/cloudcore.log)"
until [[ -s $run/cloudcore/pki/ca.crt ]] && grep -q "hub listening" "$run/cloudcore.log"; do
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

# One edge node. Its store is made anew with the control plane's data.
rm -rf "$run/edge-1"
cat >"$run/edgecore.yaml" <<EOF
nodeName: demo-edge-1
cloud:
  url: wss://127.0.0.1:10000/v1/connect
  tokenFile: $token_file
  caFile: $run/cloudcore/pki/ca.crt
dataDir: $run/edge-1
labels:
  tether.io/site: demo-store
$runtime_cfg
EOF
bin/edgecore --config "$run/edgecore.yaml" >"$run/edgecore.log" 2>&1 &
pids+=($!)
echo "demo: starting edgecore (log: $run/edgecore.log)"

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
else
  echo "demo: kubectl is not installed; the demo runs, but apply manifests/demo/web.yaml yourself" >&2
fi

cat <<MSG

Tether demo is running: the control plane, cloudcore and one edge node.

  export KUBECONFIG=$kubeconfig
  kubectl get nodes,pods -o wide
  kubectl scale deployment store-web --replicas=4

Logs: $run/cloudcore.log, $run/edgecore.log, $run/logs/ (control plane)
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
