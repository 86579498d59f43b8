#!/usr/bin/env bash
# Installs everything intercept needs on a fresh Debian machine: the BPF
# toolchain and tools from apt, the npm dependencies (which compile the CLI),
# and a bpffs mount. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# libjansson-dev and libbpf-dev build the CNI plugin (cni/, linked statically: the binary is copied onto nodes);
# podman, runc, containernetworking-plugins and busybox-static run the CNI tests with a real container runtime.
packages=(clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev libjansson-dev iproute2 curl util-linux wrk iptables
  podman runc containernetworking-plugins busybox-static)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm ci installs exactly the lock file; build:ts compiles src/ (and the tests) to dist/.
npm ci --no-audit --no-fund
npm run build:ts
npm run build:cni

if ! grep -qs " /sys/fs/bpf bpf " /proc/mounts; then
  ${sudo:-} mount -t bpf bpf /sys/fs/bpf
fi
echo "setup: ready"
