#!/usr/bin/env bash
# Runs a local 3-member kvd cluster in the foreground (`make cluster`):
# members infra1..3 on 127.0.0.1, clients on 2379/22379/32379, peers on
# 2380/22380/32380, data and logs under ./cluster.kvd/. Ctrl-C stops all
# three; so does any member exiting on its own.
set -euo pipefail

KVD=${KVD:-target/release/kvd}
DIR=${CLUSTER_DIR:-./cluster.kvd}
TOKEN=${CLUSTER_TOKEN:-kvd-local-cluster}
CLUSTER="infra1=http://127.0.0.1:2380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380"

if [[ ! -x $KVD ]]; then
    echo "error: $KVD not found; run 'make build' first" >&2
    exit 2
fi
mkdir -p "$DIR"

pids=()
stop_all() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    wait || true
}
trap stop_all EXIT
trap 'echo; echo "stopping the cluster"; stop_all; exit 0' INT TERM

# start NAME CLIENT_PORT PEER_PORT
start() {
    local name=$1 client=http://127.0.0.1:$2 peer=http://127.0.0.1:$3
    "$KVD" serve \
        --name "$name" \
        --data-dir "$DIR/$name" \
        --listen-client-urls "$client" \
        --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" \
        --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$CLUSTER" \
        --initial-cluster-token "$TOKEN" \
        --initial-cluster-state new \
        >>"$DIR/$name.log" 2>&1 &
    pids+=("$!")
    echo "$name: clients $client, peers $peer, log $DIR/$name.log"
}

start infra1 2379 2380
start infra2 22379 22380
start infra3 32379 32380

echo "cluster up; try:"
echo "  ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 member list -w table"
echo "Ctrl-C to stop"

status=0
wait -n || status=$?
echo "a member exited (status $status); stopping the others, see $DIR/*.log" >&2
exit "$status"
