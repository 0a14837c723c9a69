#!/usr/bin/env bash
# Runs the Tether demo until Ctrl-C. `make demo` builds bin/ first.
# For now it runs the local Kubernetes control plane (bin/controlplane);
# cloudcore and the edges join it here later.
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

cat <<MSG

Tether demo is running.

  export KUBECONFIG=$kubeconfig
  kubectl get namespaces
  kubectl get nodes

Component logs: $run/logs/
Press Ctrl-C to stop everything.
MSG

# Until Ctrl-C or until a component exits.
set +e
wait -n "${pids[@]}"
status=$?
set -e
if [[ $status -ne 0 && $status -lt 128 ]]; then
  echo "demo: a component exited (status $status); see $run/controlplane.log" >&2
fi
