#!/usr/bin/env bash
# Installs the Debian packages Tether's demo and tests run against, those
# that are missing only: with all of them present it changes nothing and
# takes a fraction of a second, so `make demo`, `make test` and .ci/run call
# it every time. As root it runs `apt-get update` (only when something is
# missing) and `apt-get install`; otherwise it stops at once and prints the
# exact command to run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# etcd-server: the control plane's store. containerd, runc,
# containernetworking-plugins: the edge's container runtime; iproute2: ip,
# for its pod bridge. busybox-static: the busybox image built locally for
# the demo and the CRI tests. mosquitto, mosquitto-clients: the MQTT broker
# for devices. curl: the demo fetches a page from a pod; curl and
# netcat-openbsd also go into the conformance run's agnhost image, with
# bash-static as its shell; nginx: its binary,
# libraries, mime.types and welcome page make the conformance run's nginx
# image (the package also installs a web server on port 80, which the tests
# do not use: when this script installed it, it is stopped and disabled).
# python3-pymodbus
# (run with /usr/bin/python3; its server imports serial_asyncio, only a
# recommended package), mbpoll: a Modbus TCP device and master for the
# mapper's tests. qemu-user-static: the arm64 and armv7 release binaries run
# under it in a test. systemd: systemd-analyze verifies edgecore's unit in a
# test. file: tells that a release binary is static.
pkgs=(etcd-server containerd runc containernetworking-plugins iproute2 busybox-static mosquitto mosquitto-clients
  curl netcat-openbsd bash-static nginx python3-pymodbus python3-serial-asyncio mbpoll qemu-user-static systemd file)

# One dpkg-query for all: "<package> <status>" for those dpkg knows.
declare -A have=()
while read -r p status; do
  [[ $status == "install ok installed" ]] && have[$p]=1
done < <(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null || true)
missing=()
for p in "${pkgs[@]}"; do
  [[ -n ${have[$p]:-} ]] || missing+=("$p")
done
# kubectl is not a Debian package on bookworm: the demo uses it when it is
# on PATH (the tests use client-go), and it is installed when some
# configured source has it.
want_kubectl=false
if ! command -v kubectl >/dev/null; then
  want_kubectl=true
fi

if [[ ${#missing[@]} -eq 0 && $want_kubectl == false ]]; then
  exit 0
fi
if [[ ${#missing[@]} -eq 0 ]] && ! apt-cache show kubectl >/dev/null 2>&1; then
  # Only kubectl is missing, and no source has it: nothing to do.
  exit 0
fi

if [[ $EUID -ne 0 ]]; then
  [[ ${#missing[@]} -gt 0 ]] || exit 0 # kubectl is optional
  echo "install-deps: missing Debian packages: ${missing[*]}" >&2
  echo "install-deps: run, as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: apt-get update (missing: ${missing[*]:-kubectl})"
apt-get update
if [[ $want_kubectl == true ]] && apt-cache show kubectl >/dev/null 2>&1; then
  missing+=(kubectl)
fi
[[ ${#missing[@]} -gt 0 ]] || exit 0
echo "install-deps: apt-get install ${missing[*]}"
apt-get install -y --no-install-recommends "${missing[@]}"
for p in "${missing[@]}"; do
  if [[ $p == nginx ]]; then
    # Debian starts the default site on 0.0.0.0:80 at install: nothing here
    # needs it, so it does not stay open on the machine (systemd, or the
    # init script where systemd does not run).
    systemctl disable --now nginx >/dev/null 2>&1 || service nginx stop >/dev/null 2>&1 || true
  fi
done
