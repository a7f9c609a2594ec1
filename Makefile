# sandbox-steps: the two commands are `make demo` and `make test` (see README.md).
CARGO ?= cargo

.PHONY: build test lint bench demo image docs

build:
	$(CARGO) build --release --workspace

# Every test, against real servers the harness starts itself (git, PostgreSQL, fake-gcs-server,
# OpenBao); .ci/run installs them on a fresh machine.
test: tests/node_modules/.package-lock.json
	$(CARGO) test --workspace

# Real GitHub webhook payloads for the Sensor tests (npm, pinned by tests/package-lock.json).
tests/node_modules/.package-lock.json: tests/package-lock.json
	npm ci --prefix tests --no-audit --no-fund --loglevel=error

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench:
	bash bench/run.sh

docs:
	$(CARGO) doc --workspace --no-deps

# The lifecycle workflows run locally against local servers (crates/demo); also a test in make test.
demo:
	$(CARGO) build -q -p sandbox-steps -p demo
	target/debug/demo

image:
	@echo "make image: not available yet. The image build (static binaries, FROM scratch, verified" >&2
	@echo "contents) lands with the image issue (#7)." >&2
	@exit 1
