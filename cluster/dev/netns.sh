#!/usr/bin/env bash
# Workers on "other hosts" on one machine: network namespaces with their own IP addresses, joined by
# a bridge in the root namespace. Idempotent; needs root (ip netns, veth, bridge).
#
#   cluster/dev/netns.sh start [N]   # bridge se-br0 10.77.0.1/24, namespaces se-host1..N at 10.77.0.(1+i)
#   cluster/dev/netns.sh stop        # remove them
#   cluster/dev/netns.sh status
#
# The filesystem stays shared (namespaces isolate the network only): like a site whose nodes mount
# one shared filesystem. Run a worker on host i with: ip netns exec se-host$i dask worker tcp://10.77.0.1:PORT
set -euo pipefail
BRIDGE=se-br0
NET=10.77.0
N=${2:-2}

start() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  for i in $(seq 1 "$N"); do
    ns=se-host$i
    if ! ip netns list | grep -qw "$ns"; then
      ip netns add "$ns"
    fi
    if ! ip link show "se-veth$i" >/dev/null 2>&1; then
      ip link add "se-veth$i" type veth peer name eth0 netns "$ns"
      ip link set "se-veth$i" master "$BRIDGE" up
    fi
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip addr replace "$NET.$((i + 1))/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
  done
  echo "namespaces se-host1..se-host$N up on $BRIDGE ($NET.0/24); driver address $NET.1"
}

stop() {
  for ns in $(ip netns list | awk '{print $1}' | grep '^se-host' || true); do
    ip netns del "$ns" || true
  done
  for link in $(ip -o link show | awk -F': ' '{print $2}' | grep '^se-veth' | cut -d@ -f1 || true); do
    ip link del "$link" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  echo "namespaces removed"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) ip netns list; ip -brief addr show "$BRIDGE" 2>/dev/null || true ;;
  *) echo "usage: $0 start [N] | stop | status" >&2; exit 2 ;;
esac
