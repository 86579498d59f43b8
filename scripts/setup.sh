#!/usr/bin/env bash
# Installs everything intercept needs on a fresh Debian machine: the BPF
# toolchain and tools from apt, the npm dependencies (which compile the CLI),
# and a bpffs mount. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(clang llvm bpftool libbpf-dev iproute2 curl util-linux wrk iptables)
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

if ! grep -qs " /sys/fs/bpf bpf " /proc/mounts; then
  ${sudo:-} mount -t bpf bpf /sys/fs/bpf
fi
echo "setup: ready"
