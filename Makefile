# agentmesh — the two commands a fresh machine needs are `make demo` and `make test`.

CARGO ?= cargo
# Our own build uses a vendored protoc; dependencies that run protoc themselves
# (etcd-client, later) find the system one that `make deps` installs.
APT_PACKAGES := protobuf-compiler

.PHONY: all build demo test deps lint fmt clean

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

## lint: formatting and clippy with warnings denied
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## test: everything — lint, unit and property tests, end-to-end tests with real processes
test: deps lint build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast -- --test-threads=2; \
	fi
	$(CARGO) test --workspace --doc

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
