#!/usr/bin/env bash
# Builds the upstream tools the tests run for real, from their published Go modules, into a cache
# keyed by what they are built from; a later run (a later `make test`, CI on the same machine) finds
# them there and builds nothing. Prints the directory holding the binaries on its last line.
#
#   bash cluster/build.sh            # every tool below
#   bash cluster/build.sh argo       # only Argo Workflows' CLI (argo lint)
#
# kube: one multicall binary (cluster/kube) with kube-apiserver, kube-controller-manager,
#       kube-scheduler, kubelet, etcd and kubectl.
# containerd: containerd and ctr (cluster/containerd), and its runc shim: the one-node cluster's
#       runtime (with Debian's runc and CNI plugins).
# pause: the pods' sandbox process (cluster/pause), for a pause image built FROM scratch.
# argo-workflows: Argo Workflows' controller and executor, argoexec (cluster/argo-workflows).
# argo-events: Argo Events' controller, EventSource and Sensor (one binary, from its module).
# argo: Argo Workflows' `argo` CLI, built from a copy of its module with an empty ui/dist/app (the
#       CLI embeds the web UI's files, which the module zip lacks; lint needs none of them).
# sensor-check: Argo Events' own filter and trigger-parameter code (cluster/sensor-check), run on
#       webhook payloads, for the Sensor tests.
# crds: the CustomResourceDefinitions the library's manifests need (Argo Workflows' full ones, Argo
#       Events', Argo CD's Application), copied from the published modules into crds/.
#
# Cache: $SANDBOX_STEPS_CACHE (default ~/.cache/sandbox-steps)/cluster/<tool>-<key>/, the key a hash
# of the pinned versions and the wrapper's files. Go's own module and build caches are reused too.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${SANDBOX_STEPS_CACHE:-$HOME/.cache/sandbox-steps}/cluster"
bin="$cache/bin"
mkdir -p "$bin"
tools=("$@")
[ "${#tools[@]}" -gt 0 ] || tools=(argo kube sensor-check crds containerd pause argo-workflows argo-events)

command -v go >/dev/null || { echo "cluster/build.sh: go not found (Go >= 1.26 and the module proxy are needed)" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
ldflags="-s -w"

key_of() { cat "$@" | sha256sum | cut -c1-16; }

# install_tool NAME DIR: links bin/NAME to DIR/NAME and removes NAME's builds of other keys.
install_tool() {
    local name=$1 dir=$2 old
    ln -sfn "$dir/$name" "$bin/$name"
    # Exactly NAME-<16 hex digits>: `argo-*` would also match argo-workflows' builds.
    for old in "$cache/$name"-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]; do
        [ ! -e "$old" ] || [ "$old" = "$dir" ] || rm -rf "$old"
    done
}

# build_wrapper NAME WHAT MINUTES [LDFLAGS [TAGS]]: builds the wrapper module cluster/NAME into
# NAME-<key>/NAME.
build_wrapper() {
    local name=$1 what=$2 minutes=$3 key dir start
    local flags="$ldflags ${4:-}" tags=${5:-}
    key=$( (cat "$here/$name/go.mod" "$here/$name/main.go"; [ ! -f "$here/$name/go.sum" ] || cat "$here/$name/go.sum"
        echo "$flags $tags $GOFLAGS $(go env GOVERSION)") | key_of -)
    dir="$cache/$name-$key"
    if [ -x "$dir/$name" ]; then install_tool "$name" "$dir"; return; fi
    start=$(date +%s)
    echo "cluster/build.sh: building $name ($what)" >&2
    echo "cluster/build.sh:   cold on 2 cores this takes about $minutes minutes; later runs reuse $dir" >&2
    mkdir -p "$dir.tmp"
    (cd "$here/$name" && go build -tags="$tags" -ldflags "$flags" -o "$dir.tmp/$name" .)
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    install_tool "$name" "$dir"
    echo "cluster/build.sh: $name built in $(( $(date +%s) - start )) s" >&2
}

# containerd and ctr (cluster/containerd), and its runc shim (cluster/containerd/shim), which
# needs a binary of its own. Snapshotters the node does not use (overlayfs and native are built
# in) need C libraries or kernel modules: left out with tags, as containerd's own build can.
build_containerd() {
    local key dir start flags tags="no_btrfs no_devmapper no_zfs"
    flags="$ldflags -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
    key=$( (cat "$here/containerd/go.mod" "$here/containerd/go.sum" "$here/containerd/main.go" \
        "$here/containerd/shim/main.go"; echo "$flags $tags $GOFLAGS $(go env GOVERSION)") | key_of -)
    dir="$cache/containerd-$key"
    if [ ! -x "$dir/containerd-shim-runc-v2" ]; then
        start=$(date +%s)
        echo "cluster/build.sh: building containerd $CONTAINERD_VERSION, ctr and the runc shim (cold about 4 minutes)" >&2
        rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
        (cd "$here/containerd" && go build -tags="$tags" -ldflags "$flags" -o "$dir.tmp/containerd" . &&
            go build -tags="$tags" -ldflags "$flags" -o "$dir.tmp/containerd-shim-runc-v2" ./shim)
        rm -rf "$dir" && mv "$dir.tmp" "$dir"
        echo "cluster/build.sh: containerd built in $(( $(date +%s) - start )) s" >&2
    fi
    install_tool containerd "$dir"
    ln -sfn "$dir/containerd-shim-runc-v2" "$bin/containerd-shim-runc-v2"
}

# Argo Workflows' controller and executor (cluster/argo-workflows), built against a writable copy
# of the module: upstream's repository has workflow/executor/osspecific/signal_linux.go as a
# symbolic link to signal_darwin.go, and module zips drop symbolic links, so the published module
# does not build argoexec for Linux; the copy gets the link back.
build_argo_workflows() {
    local key dir start module src tags=kubernetes_protomessage_one_more_release
    module="github.com/argoproj/argo-workflows/v4@$ARGO_WORKFLOWS_VERSION"
    local flags="$ldflags -X github.com/argoproj/argo-workflows/v4.version=$ARGO_WORKFLOWS_VERSION"
    key=$( (cat "$here/argo-workflows/go.mod" "$here/argo-workflows/go.sum" "$here/argo-workflows/main.go"
        echo "$module $flags $tags $GOFLAGS $(go env GOVERSION)") | key_of -)
    dir="$cache/argo-workflows-$key"
    if [ ! -x "$dir/argo-workflows" ]; then
        start=$(date +%s)
        echo "cluster/build.sh: building argo-workflows (Argo Workflows $ARGO_WORKFLOWS_VERSION controller and argoexec; cold about 5 minutes)" >&2
        src=$(module_dir "$module")
        rm -rf "$dir.src" "$dir.tmp" && mkdir -p "$dir.tmp" "$dir.src"
        cp -r "$src" "$dir.src/upstream" && chmod -R u+w "$dir.src/upstream"
        ln -s signal_darwin.go "$dir.src/upstream/workflow/executor/osspecific/signal_linux.go"
        cp "$here/argo-workflows/main.go" "$here/argo-workflows/go.mod" "$here/argo-workflows/go.sum" "$dir.src/"
        echo "replace github.com/argoproj/argo-workflows/v4 => ./upstream" >> "$dir.src/go.mod"
        (cd "$dir.src" && go build -tags="$tags" -ldflags "$flags" -o "$dir.tmp/argo-workflows" .)
        rm -rf "$dir.src"
        rm -rf "$dir" && mv "$dir.tmp" "$dir"
        echo "cluster/build.sh: argo-workflows built in $(( $(date +%s) - start )) s" >&2
    fi
    install_tool argo-workflows "$dir"
}

build_argo() {
    local key dir start module src
    module="github.com/argoproj/argo-workflows/v4@$ARGO_WORKFLOWS_VERSION"
    local tags=kubernetes_protomessage_one_more_release
    # The key: what the binary is built from and how (not this script's text, whose edits would
    # otherwise rebuild it).
    key=$(echo "$module $tags $ldflags $GOFLAGS $(go env GOVERSION)" | key_of -)
    dir="$cache/argo-$key"
    if [ -x "$dir/argo" ]; then install_tool argo "$dir"; return; fi
    start=$(date +%s)
    echo "cluster/build.sh: building argo (Argo Workflows $ARGO_WORKFLOWS_VERSION CLI; cold about 5 minutes)" >&2
    src=$(module_dir "$module")
    rm -rf "$dir.src" "$dir.tmp" && mkdir -p "$dir.tmp"
    cp -r "$src" "$dir.src" && chmod -R u+w "$dir.src"
    mkdir -p "$dir.src/ui/dist/app" && echo "UI not built: the rig uses the CLI only" > "$dir.src/ui/dist/app/index.html"
    (cd "$dir.src" && go build -tags="$tags" \
        -ldflags "$ldflags -X github.com/argoproj/argo-workflows/v4.version=$ARGO_WORKFLOWS_VERSION" \
        -o "$dir.tmp/argo" ./cmd/argo)
    rm -rf "$dir.src"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    install_tool argo "$dir"
    echo "cluster/build.sh: argo built in $(( $(date +%s) - start )) s" >&2
}

# Argo Events' one binary (controller, eventsource-service, sensor-service), built from a writable
# copy of its module as argo is: the e2e runs its controller, EventSource and Sensors.
build_argo_events() {
    local key dir start module src
    module="github.com/argoproj/argo-events@$ARGO_EVENTS_VERSION"
    local flags="$ldflags -X github.com/argoproj/argo-events.version=$ARGO_EVENTS_VERSION"
    key=$(echo "$module $flags $GOFLAGS $(go env GOVERSION)" | key_of -)
    dir="$cache/argo-events-$key"
    if [ -x "$dir/argo-events" ]; then install_tool argo-events "$dir"; return; fi
    start=$(date +%s)
    echo "cluster/build.sh: building argo-events (Argo Events $ARGO_EVENTS_VERSION controller, EventSource and Sensor; cold about 5 minutes)" >&2
    src=$(module_dir "$module")
    rm -rf "$dir.src" "$dir.tmp" && mkdir -p "$dir.tmp"
    cp -r "$src" "$dir.src" && chmod -R u+w "$dir.src"
    (cd "$dir.src" && go build -ldflags "$flags" -o "$dir.tmp/argo-events" ./cmd)
    rm -rf "$dir.src"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    install_tool argo-events "$dir"
    echo "cluster/build.sh: argo-events built in $(( $(date +%s) - start )) s" >&2
}

# module_dir MODULE@VERSION: the module's files, downloaded into Go's module cache when absent.
module_dir() {
    local dir
    dir=$(cd / && go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [ -d "$dir" ] || { echo "cluster/build.sh: could not download $1" >&2; exit 1; }
    echo "$dir"
}

build_crds() {
    local key dir workflows events cd
    key=$(key_of "$here/versions.env" "$here/build.sh")
    dir="$cache/crds-$key"
    if [ -d "$dir" ]; then ln -sfn "$dir" "$cache/crds"; return; fi
    rm -rf "$cache"/crds-*
    workflows=$(module_dir "github.com/argoproj/argo-workflows/v4@$ARGO_WORKFLOWS_VERSION")
    events=$(module_dir "github.com/argoproj/argo-events@$ARGO_EVENTS_VERSION")
    cd=$(module_dir "github.com/argoproj/argo-cd/v3@$ARGO_CD_VERSION")
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    cp "$workflows"/manifests/base/crds/full/argoproj.io_*.yaml "$dir.tmp/"
    cp "$events"/manifests/base/crds/argoproj.io_*.yaml "$dir.tmp/"
    cp "$cd"/manifests/crds/application-crd.yaml "$dir.tmp/argoproj.io_applications.yaml"
    chmod -R u+w "$dir.tmp"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    ln -sfn "$dir" "$cache/crds"
}

for tool in "${tools[@]}"; do
    case "$tool" in
        kube)
            # The version the servers and kubectl report (what version-skew checks read), as
            # Kubernetes' own build stamps it.
            minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
            stamp=""
            for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
                stamp="$stamp -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
            done
            build_wrapper kube "kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, etcd, kubectl; Kubernetes $KUBERNETES_VERSION" 10-15 "$stamp" ;;
        containerd) build_containerd ;;
        pause) build_wrapper pause "the pods' sandbox process" 1 ;;
        argo-workflows) build_argo_workflows ;;
        sensor-check) build_wrapper sensor-check "Argo Events $ARGO_EVENTS_VERSION's Sensor filters and trigger parameters" 2 ;;
        argo) build_argo ;;
        argo-events) build_argo_events ;;
        crds) build_crds ;;
        *) echo "cluster/build.sh: unknown tool $tool (argo, kube, sensor-check, crds, containerd, pause, argo-workflows, argo-events)" >&2; exit 2 ;;
    esac
done
echo "$bin"
