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

.PHONY: build deps test-deps test run cluster lint bench bench-compare bench-scale bench-ui bench-backup fuzz robustness soak kvd-failpoints

build: deps
	$(CARGO) build --release

deps:
	@missing=""; \
	command -v protoc >/dev/null 2>&1 || missing="$$missing protobuf-compiler"; \
	[ -f /usr/include/google/protobuf/descriptor.proto ] || missing="$$missing libprotobuf-dev"; \
	command -v etcdctl >/dev/null 2>&1 || missing="$$missing etcd-client"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# --workspace: kvd and the robustness suite's checkers (which must catch
# deliberately broken histories). Doc tests are left out (--lib --bins --tests): there are none, and an
# empty doc-test run would be the suite's closing line.
# Release: the tests spawn the kvd binary, and an optimized one keeps Raft's
# heartbeats and elections on time.
# etcd itself (Debian's etcd-server) for the tests that migrate between etcd
# and kvd; its system service, which the package starts, is stopped and
# disabled so that it never holds port 2379.
test-deps: deps
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		echo "installing: chromium chromium-driver"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	fi
	@if ! command -v etcd >/dev/null 2>&1; then \
		echo "installing: etcd-server"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server; \
		$(SUDO) systemctl disable --now etcd >/dev/null 2>&1 || true; \
	fi

test: test-deps
	$(CARGO) test --release --workspace --lib --bins --tests -- --test-threads=$(TEST_THREADS)

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
	$(CARGO) bench --bench put_load --bench watch_load --bench snapshot_catchup --bench proxy_load

# kvd and etcd side by side (Debian etcd-server's /usr/bin/etcd): a fresh
# 3-member cluster of each per round, each workload run on both back to back,
# then one member of each with KVD_BENCH_KEYS keys for memory and disk.
# Prints a table of kvd/etcd ratios.
bench-compare: deps
	@command -v etcd >/dev/null 2>&1 || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server || true
	$(CARGO) bench --bench compare

# How kvd grows: 10k/100k/1M keys (put rate, range latency, RSS, data dir,
# restart after kill -9, learner catch-up), 10k/100k watchers, 100k leases.
bench-scale: deps
	$(CARGO) bench --bench scale

# The web console on 1M keys (KVD_UI_KEYS) in headless Chromium: first-load
# bytes and the time each browsing step takes to show.
bench-ui: test-deps
	$(CARGO) bench --bench ui

# Backup and restore of 256 MiB and 1 GiB of values (kvd backup save/restore,
# and etcdctl snapshot save/restore against etcd when installed): time and
# peak RSS of each, and the server's RSS during the save.
bench-backup: test-deps
	$(CARGO) bench --bench backup

# Fuzzing (cargo fuzz / libFuzzer) of the decoders that take bytes from
# outside: Raft entries, peer frames, snapshot records, the YAML config,
# snapshot files (kvd backup).
# Each target runs FUZZ_SECONDS from the committed seeds (fuzz/seeds/) into a
# local corpus (fuzz/corpus/, not committed); a crash stops the run and its
# input lands in fuzz/artifacts/. libFuzzer needs nightly flags: a nightly
# toolchain when rustup has one, else RUSTC_BOOTSTRAP on the stable one.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= raft_entry peer_frames snapshot_records config_yaml snapshot_file gateway_json v2_form
FUZZ_CARGO := $(shell rustup toolchain list 2>/dev/null | grep -q '^nightly' && echo '$(CARGO) +nightly' || echo 'RUSTC_BOOTSTRAP=1 $(CARGO)')

fuzz: deps
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		$(FUZZ_CARGO) fuzz run -O $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 || exit 1; \
	done

# The robustness suite (robustness/): real 3-member clusters behind
# userspace UDP proxies, one fault per scenario (kills, pauses, crashes at
# failpoints, partitions, loss, delay, member replace), histories checked
# for linearizability, lost writes, the watch guarantees and convergence.
# kvd is built with --features failpoints (a copy in target/kvd-failpoints;
# the next plain build rebuilds only the kvd crate). Prints a table and
# `robustness: N passed, M failed`; target/robustness/summary.json.
ROBUSTNESS_OUT ?= target/robustness
MINUTES ?= 60

kvd-failpoints: deps
	$(CARGO) build --release --features failpoints --bin kvd
	cp target/release/kvd target/kvd-failpoints

robustness: kvd-failpoints
	$(CARGO) build --release -p kvd-robustness
	target/release/kvd-robustness --profile ci --kvd target/kvd-failpoints --out $(ROBUSTNESS_OUT)

# Random faults every 5-15 s for MINUTES; stops at the first violation and
# keeps that round's histories, logs and data dirs under $(ROBUSTNESS_OUT).
soak: kvd-failpoints
	$(CARGO) build --release -p kvd-robustness
	target/release/kvd-robustness --profile soak --minutes $(MINUTES) --kvd target/kvd-failpoints --out $(ROBUSTNESS_OUT)
