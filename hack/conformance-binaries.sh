#!/usr/bin/env bash
# Builds what the node conformance run needs (make conformance, and its CI
# subset in make test-integration) at the Kubernetes version pinned in
# tools/kube/go.mod, into bin/, unless bin/ already has them at that version
# (recorded in bin/.conformance-version):
#   e2e.test   Kubernetes' e2e suite (go test -c k8s.io/kubernetes/test/e2e)
#   ginkgo     the ginkgo CLI at the suite's ginkgo version (parallel runs)
#   agnhost    the agnhost test image's program (static)
#   nnp        the nonewprivs test image's program (static)
# Only the first run pays for the builds (about 3 min for e2e.test on 2
# cores with the modules downloaded).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
stamp="$bin/.conformance-version"
programs=(e2e.test ginkgo agnhost nnp)

version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$root/tools/kube/go.mod")
if [[ ! $version =~ ^v1\.([0-9]+)\.[0-9]+$ ]]; then
  echo "conformance-binaries: cannot read the k8s.io/kubernetes version from tools/kube/go.mod (got '$version')" >&2
  exit 1
fi
minor=${BASH_REMATCH[1]}

mkdir -p "$bin"
exec 9>"$bin/.conformance-build.lock"
flock 9

missing=()
for p in "${programs[@]}"; do
  [[ -x $bin/$p ]] || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 && $(cat "$stamp" 2>/dev/null || true) == "$version" ]]; then
  echo "conformance-binaries: bin/ has ${programs[*]} $version; nothing to do"
  exit 0
fi
echo "conformance-binaries: building ${programs[*]} $version into bin/ (3-5 min on 2 cores)"
rm -f "$stamp"
start=$(date +%s)
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
cd "$root/tools/kube"
go test -c -ldflags "$ldflags" -o "$bin/e2e.test" k8s.io/kubernetes/test/e2e
go build -ldflags "-s -w" -o "$bin/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
CGO_ENABLED=0 go build -ldflags "-s -w" -o "$bin/agnhost" k8s.io/kubernetes/test/images/agnhost
CGO_ENABLED=0 go build -ldflags "-s -w" -o "$bin/nnp" k8s.io/kubernetes/test/images/nonewprivs
echo "$version" > "$stamp"
echo "conformance-binaries: built in $(( $(date +%s) - start ))s"
