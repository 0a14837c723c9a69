#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kube-scheduler at the
# version pinned in tools/kube/go.mod into bin/, unless bin/ already holds
# all three at that version (recorded in bin/.kube-version), and
# metrics-server at the version pinned in tools/metrics-server/go.mod
# (bin/.metrics-server-version). Only the first run pays for the builds.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
stamp="$bin/.kube-version"
components=(kube-apiserver kube-controller-manager kube-scheduler)

version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$root/tools/kube/go.mod")
if [[ ! $version =~ ^v1\.([0-9]+)\.[0-9]+$ ]]; then
  echo "kube-binaries: cannot read the k8s.io/kubernetes version from tools/kube/go.mod (got '$version')" >&2
  exit 1
fi
minor=${BASH_REMATCH[1]}

mkdir -p "$bin"
# One build at a time, even under make -j or two shells.
exec 9>"$bin/.kube-build.lock"
flock 9

missing=()
for c in "${components[@]}"; do
  [[ -x $bin/$c ]] || missing+=("$c")
done
have=$(cat "$stamp" 2>/dev/null || true)

if [[ ${#missing[@]} -eq 0 && $have == "$version" ]]; then
  echo "kube-binaries: bin/ has ${components[*]} $version; nothing to do"
else
  if [[ ${#missing[@]} -gt 0 ]]; then
    reason="missing: ${missing[*]}"
  elif [[ -z $have ]]; then
    reason="bin/.kube-version is missing"
  else
    reason="bin/.kube-version says $have"
  fi
  echo "kube-binaries: building ${components[*]} $version into bin/ ($reason)"
  echo "kube-binaries: the first build takes several minutes (3-4 min measured on 2 cores with modules downloaded)"

  # Stamp the version the binaries report (kubectl version, /version).
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"

  rm -f "$stamp"
  start=$(date +%s)
  pkgs=()
  for c in "${components[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$root/tools/kube" && go build -ldflags "$ldflags" -o "$bin/" "${pkgs[@]}")
  echo "$version" > "$stamp"
  echo "kube-binaries: built in $(( $(date +%s) - start ))s: $("$bin/kube-apiserver" --version)"
fi

# metrics-server, at the version pinned in tools/metrics-server/go.mod (its
# tool directive), for the tests of kubectl top on edge nodes. Stamped
# apart, in bin/.metrics-server-version.
ms_version=$(awk '$1 == "sigs.k8s.io/metrics-server" { print $2 }' "$root/tools/metrics-server/go.mod")
ms_stamp="$bin/.metrics-server-version"
if [[ -x $bin/metrics-server && $(cat "$ms_stamp" 2>/dev/null || true) == "$ms_version" ]]; then
  echo "kube-binaries: bin/ has metrics-server $ms_version; nothing to do"
else
  echo "kube-binaries: building metrics-server $ms_version into bin/"
  rm -f "$ms_stamp"
  start=$(date +%s)
  (cd "$root/tools/metrics-server" && go build -ldflags "-s -w" -o "$bin/" sigs.k8s.io/metrics-server/cmd/metrics-server)
  echo "$ms_version" > "$ms_stamp"
  echo "kube-binaries: built metrics-server in $(( $(date +%s) - start ))s"
fi
