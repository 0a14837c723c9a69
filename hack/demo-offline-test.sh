#!/usr/bin/env bash
# Runs the demo's offline walk-through without a person (make demo-test; as
# root, with containerd, kubectl and curl): starts hack/demo.sh in the
# background, then
#   1. cloud-down: the store page is still served, its price lookup (the
#      store pod calls the price Service by name: the edge's resolver and
#      Service rules) still answers, and the API server sees the node
#      NotReady;
#   2. edge-reboot with the cloud still down: every edge process and pod is
#      SIGKILLed, containerd starts empty; the store's pods are back on the
#      edge within seconds, from edgecore's store alone, and the price
#      lookup answers again (the rules, gone with the power, are back);
#   3. cloud-up: the node is Ready again, and the same pods (same UIDs, no
#      new one: nothing evicted) are Running and Ready with at most one
#      restart each (the reboot's);
#   4. edge-restart: edgecore restarts and the pods run on untouched (same
#      sandboxes and addresses, no restart counted).
# It prints each command's output (the walk-through) and ends with
# "demo-offline-test: N passed, M failed"; it exits non-zero if any check
# failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run=${TETHER_RUN_DIR:-$root/.run}
export TETHER_RUN_DIR=$run
mkdir -p "$run"
demo=hack/demo.sh

for tool in kubectl curl containerd; do
  command -v "$tool" >/dev/null || { echo "demo-offline-test: $tool is missing (make deps)" >&2; exit 1; }
done
[[ $EUID -eq 0 ]] || { echo "demo-offline-test: run as root (the edge's containerd needs it)" >&2; exit 1; }

passed=0 failed=0
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then
    echo "  ok: $what"
    passed=$((passed + 1))
  else
    echo "  FAILED: $what" >&2
    failed=$((failed + 1))
  fi
}
step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "hack/demo.sh (in the background; its output: $run/demo-test.out)"
start=$SECONDS
setsid "$demo" >"$run/demo-test.out" 2>&1 </dev/null &
demo_pid=$!
finish() {
  if kill -0 "$demo_pid" 2>/dev/null; then
    # SIGTERM: a background job of a script ignores SIGINT.
    kill -TERM "$demo_pid" 2>/dev/null
    for _ in $(seq 600); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$demo_pid" 2>/dev/null && { echo "demo-offline-test: the demo did not stop within 60s" >&2; kill -KILL "$demo_pid"; }
  fi
  "$demo" down # whatever a killed demo left

}
trap finish EXIT
sleep 1
until [[ -e $run/demo.ready ]]; do
  if ! kill -0 "$demo_pid" 2>/dev/null || ((SECONDS - start > 400)); then
    echo "demo-offline-test: the demo did not come up:" >&2
    tail -n 40 "$run/demo-test.out" >&2
    exit 1
  fi
  sleep 0.5
done
echo "demo up in $((SECONDS - start))s"
export KUBECONFIG=$(cat "$run/controlplane.ready")

# pods_api: "<uid> <restarts> <phase> <ready> <ip>" per store-web pod in
# the API server, sorted.
pods_api() {
  kubectl --request-timeout=5s get pods -l app=store-web -o jsonpath='{range .items[*]}{.metadata.uid} {.status.containerStatuses[0].restartCount} {.status.phase} {.status.containerStatuses[0].ready} {.status.podIP}{.metadata.deletionTimestamp}{"\n"}{end}' | sort
}
node_ready() { kubectl --request-timeout=5s get node demo-edge-1 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}'; }
edge_pods() { "${TETHER_DEMO_BIN:-$root/bin}/democontainerd" pods --dir "$run/containerd" | grep '^default/store-web-'; }
prices_served() { "$demo" status | grep -q 'coffee 2.40 EUR'; }
serves_store() { "$demo" status | tee "$run/status.out" | sed 's/^/  | /'; grep -q 'Store 0421' "$run/status.out"; }
eventually() { # eventually SECONDS COMMAND...
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

before=$(pods_api)
echo "store-web pods in the API server (uid restarts phase ready ip):"
echo "$before" | sed 's/^/  /'
check "2 store-web pods Running and Ready" test "$(echo "$before" | grep -c ' Running true ')" -eq 2

# kubectl top (the demo runs metrics-server as root): the API server's
# aggregation layer, metrics-server, cloudcore's kubelet proxy and the
# tunnel; metrics-server needs two scrapes (10s apart) for a CPU rate.
if [[ $EUID -eq 0 ]]; then
  top_both() {
    [[ $(kubectl --request-timeout=5s top pod -l app=store-web --no-headers 2>/dev/null |
      awk '$1 ~ /^store-web-/ && $2 ~ /^[0-9]+m$/ && $3 ~ /^[0-9]+Mi$/' | wc -l) -eq 2 ]]
  }
  check "kubectl top pod shows both store-web pods' CPU and memory" eventually 90 top_both
  kubectl --request-timeout=5s top pod -l app=store-web 2>&1 | sed 's/^/  /' || true
fi

step "hack/demo.sh cloud-down"
"$demo" cloud-down
check "the store page is served with the cloud down" serves_store
check "the price lookup answers by Service name with the cloud down" eventually 30 prices_served
not_ready() { [[ $(node_ready) != True ]]; }
t0=$SECONDS
check "the API server sees the node not Ready (the cloud lost it)" eventually 40 not_ready
echo "  node Ready=$(node_ready) in the API server after $((SECONDS - t0))s"

step "hack/demo.sh edge-reboot (the cloud still down)"
"$demo" edge-reboot | tee "$run/reboot.out"
back=$(sed -n 's/.*pods back \([0-9]*\)s after edgecore started.*/\1/p' "$run/reboot.out")
check "the store's pods are back on the edge within 20s of edgecore's start (took ${back:-?}s)" test "${back:-999}" -le 20
check "the store page is served after the reboot, the cloud still down" serves_store
check "the price lookup answers after the reboot, the cloud still down" eventually 30 prices_served

step "hack/demo.sh cloud-up"
"$demo" cloud-up
check "the node is Ready again" test "$(node_ready)" = True
# The edge's statuses after the reboot reach the API server: both pods
# Running and Ready at the addresses the edge gave them.
ips_match() {
  local api edge
  api=$(pods_api | awk '$3 == "Running" && $4 == "true" {print $5}' | sort)
  edge=$(edge_pods | awk '{print $3}' | sort)
  [[ -n $api && $api == "$edge" ]]
}
check "the API server shows the pods Running and Ready at their new addresses" eventually 60 ips_match
after=$(pods_api)
echo "store-web pods in the API server (uid restarts phase ready ip):"
echo "$after" | sed 's/^/  /'
check "the same pods (same UIDs, none added or evicted)" \
  test "$(echo "$before" | awk '{print $1}')" = "$(echo "$after" | awk '{print $1}')"
restarted_at_most_once() {
  local uid r0 r1
  while read -r uid r0 _; do
    r1=$(echo "$after" | awk -v u="$uid" '$1 == u {print $2}')
    [[ -n $r1 && $r1 -le $((r0 + 1)) ]] || { echo "  pod $uid: restarts $r0 before, ${r1:-none} after" >&2; return 1; }
  done <<<"$before"
}
check "no pod restarted more than once (the reboot)" restarted_at_most_once

step "hack/demo.sh edge-restart"
sandboxes=$(edge_pods)
"$demo" edge-restart
sleep 5 # a few resyncs of edgecore
same_sandboxes() { [[ $(edge_pods) == "$sandboxes" ]]; }
check "the pods ran on through edgecore's restart (same sandboxes and addresses)" same_sandboxes
same_restarts() { [[ $(pods_api | awk '{print $1, $2}') == $(echo "$after" | awk '{print $1, $2}') ]]; }
check "no restart counted in the API server" same_restarts
check "the store page is served" serves_store
check "the price lookup answers" eventually 30 prices_served

step "stop the demo"
finish
trap - EXIT
echo "walk-through done in $((SECONDS - start))s"
echo "demo-offline-test: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
