# agentmesh — the two commands a fresh machine needs are `make demo` and `make test`.

CARGO ?= cargo
# What the tests need from Debian: etcd (a real one; cluster tests start their own) and
# protoc (etcd-client's build script runs it).
APT_PACKAGES := etcd-server protobuf-compiler libprotobuf-dev chromium chromium-driver

# etcd-client's build script needs protoc with the well-known types. Prefer the binary the
# protoc-bin-vendored crate ships (it carries its include/ directory), so `make demo`
# needs no apt at all; fall back to a system protoc.
ifeq ($(origin PROTOC), undefined)
PROTOC := $(shell $(CARGO) fetch -q >/dev/null 2>&1; find $${CARGO_HOME:-$$HOME/.cargo}/registry/src -path '*protoc-bin-vendored-linux-x86_64-*/bin/protoc' 2>/dev/null | sort | tail -1)
ifeq ($(PROTOC),)
PROTOC := $(shell command -v protoc 2>/dev/null)
endif
endif
export PROTOC

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

## llm-setup: the local model for the real-model e2e test (.venv-llm; fast when present)
llm-setup:
	@bash scripts/llm-setup.sh

## lint: formatting and clippy with warnings denied
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## test: everything — lint, unit and property tests, end-to-end tests with real processes
test: deps llm-setup lint build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast -- --test-threads=2; \
	fi
	$(CARGO) test --workspace --doc

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
bench-build:
	RUSTFLAGS='$(STATIC_RUSTFLAGS)' $(CARGO) build --release --target $(HOST_TRIPLE) \
		-p agentmesh-bench -p agentmesh-coordinator -p agentmesh-worker

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
