# kvd: build, test, run. `make run` and `make test` work on a fresh Debian
# machine: `deps` installs protoc (needed to build etcd-client's protobufs) and
# etcdctl (a second real client for the end-to-end tests) when missing.

CARGO ?= cargo
KVD := target/release/kvd
# Each test binary runs at most this many tests at once: integration tests
# start real clusters, and Raft timing gets flaky on an overloaded 2-core box.
TEST_THREADS ?= 2
# sudo only when not root (CI runs as root, without sudo).
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: build deps test run cluster lint bench

build: deps
	$(CARGO) build --release

deps:
	@missing=""; \
	command -v protoc >/dev/null 2>&1 || missing="$$missing protobuf-compiler"; \
	command -v etcdctl >/dev/null 2>&1 || missing="$$missing etcd-client"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# Doc tests are left out (--lib --bins --tests): there are none, and an
# empty doc-test run would be the suite's closing line.
# Release: the tests spawn the kvd binary, and an optimized one keeps Raft's
# heartbeats and elections on time.
test: deps
	$(CARGO) test --release --lib --bins --tests -- --test-threads=$(TEST_THREADS)

# A single-node cluster on the defaults: clients on 127.0.0.1:2379, data in ./default.kvd.
run: build
	$(KVD) serve

# Three members on 127.0.0.1 (clients 2379/22379/32379, peers 2380/22380/32380),
# data and logs in ./cluster.kvd/; Ctrl-C stops all three.
cluster: build
	KVD=$(KVD) scripts/cluster.sh

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Benchmarks (release): put throughput, latency and fsyncs per put, side by
# side with etcd when /usr/bin/etcd exists (Debian etcd-server).
bench: deps
	$(CARGO) bench
