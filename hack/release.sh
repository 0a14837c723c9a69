#!/usr/bin/env bash
# Builds the release binaries into DIST (default dist/): static
# (CGO_ENABLED=0), -trimpath, stripped (-s -w), each with its version
# stamped (`NAME --version`), and DIST/SHA256SUMS over them. `make release`
# runs it.
#
#   hack/release.sh                                  # every target below
#   DIST=/tmp/d hack/release.sh edgecore-linux-arm64 # only the ones named
#
# VERSION defaults to `git describe --always --dirty` (dev outside git).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dist=${DIST:-$root/dist}
version=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}
go=${GO:-go}

# NAME-OS-ARCH (armv7: GOARCH=arm GOARM=7) and the package of NAME.
all=(edgecore-linux-amd64 edgecore-linux-arm64 edgecore-linux-armv7
  modbus-mapper-linux-amd64 modbus-mapper-linux-arm64 modbus-mapper-linux-armv7
  cloudcore-linux-amd64 cloudcore-linux-arm64)
declare -A pkg=(
  [edgecore]=./edgecore/cmd/edgecore
  [modbus-mapper]=./devices/cmd/modbus-mapper
  [cloudcore]=./cloudcore/cmd/cloudcore
)

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")
mkdir -p "$dist"
for t in "${targets[@]}"; do
  arch=${t##*-}
  rest=${t%-*}
  os=${rest##*-}
  name=${rest%-*}
  if [[ -z ${pkg[$name]:-} || $os != linux ]]; then
    echo "release: unknown target $t (want NAME-linux-ARCH, NAME one of ${!pkg[*]})" >&2
    exit 2
  fi
  goarm=
  case $arch in
    amd64 | arm64) ;;
    armv7) arch=arm goarm=7 ;;
    *) echo "release: unknown architecture in $t (amd64, arm64, armv7)" >&2; exit 2 ;;
  esac
  echo "release: $t ($version)"
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch GOARM=$goarm "$go" build -trimpath \
    -ldflags "-s -w -X main.version=$version" -o "$dist/$t" "${pkg[$name]}"
done
# SHA256SUMS covers every binary in DIST, as `sha256sum -c SHA256SUMS` checks.
(cd "$dist" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%f\n' | LC_ALL=C sort | xargs -r sha256sum >SHA256SUMS)
echo "release: $dist/SHA256SUMS"
