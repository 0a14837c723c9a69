#!/usr/bin/env bash
# Installs, as root on Debian, the system packages Tether's demo and tests run
# against. `make deps` and .ci/run call it.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [[ $EUID -ne 0 ]]; then
  echo "install-deps: run as root (it uses apt-get)" >&2
  exit 1
fi
apt-get update
# etcd-server: the control plane's store. containerd, runc,
# containernetworking-plugins: the edge's container runtime. busybox-static:
# the busybox image built locally for the demo and the CRI tests.
# mosquitto, mosquitto-clients: the MQTT broker for devices. curl: the demo
# fetches a page from a pod. python3-pymodbus (run with /usr/bin/python3; its
# server imports serial_asyncio, only a recommended package),
# mbpoll: a Modbus TCP device and master for the mapper's tests.
pkgs=(etcd-server containerd runc containernetworking-plugins busybox-static mosquitto mosquitto-clients curl
  python3-pymodbus python3-serial-asyncio mbpoll)
# kubectl is not a Debian package on bookworm; take it when some configured
# source has it. The tests do not need it (they use client-go); the demo uses
# it to apply its workload and show it.
if apt-cache show kubectl >/dev/null 2>&1; then
  pkgs+=(kubectl)
fi
echo "install-deps: apt-get install ${pkgs[*]}"
apt-get install -y --no-install-recommends "${pkgs[@]}"
