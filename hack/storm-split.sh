#!/bin/sh
# A 10,000-node reconnect storm over two tether-sim processes sharing one
# cloudcore (simulator/testdata/bench/storm-split-{a,b}.txt): A runs cloudcore
# and 5,000 nodes, B joins A's hub with 5,000 more; A stops the hub for 60 s
# and each prints its nodes' storm (back and end times: the fleet's storm
# runs from the earlier back to the later end). Run from the repository root
# after make build. Outputs: bench/out/storm-split/{a,b}.txt.
set -eu
bin=${BIN:-bin}
dir=bench/out/storm-split # the scripts meet at files here
mkdir -p "$dir"
rm -f "$dir"/a.txt "$dir"/b.txt "$dir"/b-connected "$dir"/a-restart "$dir"/b-marked "$dir"/b-done "$dir"/a-ready # an old a.txt would name an old hub
"$bin"/tether-sim --cloudcore "$bin"/cloudcore simulator/testdata/bench/storm-split-a.txt > "$dir"/a.txt 2>&1 &
a=$!
line=
for _ in $(seq 1 600); do
	line=$(grep -m1 "another tether-sim joins" "$dir"/a.txt || true)
	[ -n "$line" ] && break
	kill -0 "$a" 2>/dev/null || { echo "storm-split: A exited: $dir/a.txt" >&2; exit 1; }
	sleep 0.5
done
[ -n "$line" ] || { echo "storm-split: A printed no hub" >&2; kill "$a"; exit 1; }
fields=$(echo "$line" | sed -n 's/.*hub \([^,]*\), its CA in Secret \([^ ]*\), kubeconfig \([^ ]*\) .*/\1 \2 \3/p')
set -- $fields
rc=0
"$bin"/tether-sim --join-hub "$1" --ca-secret "$2" --kubeconfig "$3" simulator/testdata/bench/storm-split-b.txt > "$dir"/b.txt 2>&1 || rc=$?
wait "$a" || rc=$?
grep -h '^  storm:' "$dir"/a.txt "$dir"/b.txt | sed 's/^  /storm over two processes: /' || true
exit $rc
