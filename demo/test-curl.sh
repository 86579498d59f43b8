#!/usr/bin/env bash
# The classic test-curl.sh: a request from the client's own network
# namespace, printed with its response headers.
# Usage: demo/test-curl.sh CLIENT_NETNS SERVER_ADDRESS [PORT]
set -euo pipefail
client_ns=${1:?client network namespace}
address=${2:?server address}
port=${3:-8000}
exec ip netns exec "$client_ns" curl --silent --show-error --include --max-time 5 "http://$address:$port/"
