#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kube-scheduler at the
# version pinned in tools/kube/go.mod into bin/, unless bin/ already holds
# all three at that version (recorded in bin/.kube-version). Only the first
# run pays for the build.
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
  exit 0
fi
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
cd "$root/tools/kube"
pkgs=()
for c in "${components[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
go build -ldflags "$ldflags" -o "$bin/" "${pkgs[@]}"
echo "$version" > "$stamp"
echo "kube-binaries: built in $(( $(date +%s) - start ))s: $("$bin/kube-apiserver" --version)"
