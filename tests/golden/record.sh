#!/usr/bin/env bash
# Re-records the goldens in this directory from a real etcd 3.4
# (Debian package etcd-server, /usr/bin/etcd 3.4.23) and etcdctl 3.4
# (Debian package etcd-client). CI does not need either server: the tests
# only read the recorded files.
#
# The recording runs the very tests that compare against the goldens
# (tests/etcdctl.rs), with the harness pointed at etcd instead of kvd
# (KVD_TEST_ETCD) and in record mode (KVD_GOLDEN_RECORD=1), so that the
# sequence and the normalization live in one place.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
etcd="${ETCD_BIN:-/usr/bin/etcd}"

if [ ! -x "$etcd" ]; then
    echo "record.sh: $etcd not found; install it with: apt-get install -y etcd-server" >&2
    exit 2
fi
if [ ! -x "${ETCDCTL_BIN:-/usr/bin/etcdctl}" ]; then
    echo "record.sh: etcdctl not found; install it with: apt-get install -y etcd-client" >&2
    exit 2
fi
echo "recording goldens from $("$etcd" --version | head -1)"

cd "$root"
KVD_TEST_ETCD="$etcd" KVD_GOLDEN_RECORD=1 \
    cargo test --test etcdctl -- --test-threads=1 \
    etcdctl_golden_sequence http_version_and_health_have_etcd_shapes

ls -l "$here"
