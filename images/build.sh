#!/usr/bin/env bash
# Compiles the static sandbox-steps executable and lays out the image's root filesystem in ROOTFS.
# Used by both ways of building the image (images/Dockerfile): on the host by `make image`, and in
# the Dockerfile's builder stage. The static flags live here only.
#
#   images/build.sh ROOTFS [CA_BUNDLE]     (CA_BUNDLE: default /etc/ssl/certs/ca-certificates.crt)
set -euo pipefail
rootfs=${1:?usage: images/build.sh ROOTFS [CA_BUNDLE]}
ca_bundle=${2:-/etc/ssl/certs/ca-certificates.crt}
case "$rootfs" in
    / | /. | . | "" ) echo "images/build.sh: refusing to lay out the image in $rootfs" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

# Statically linked against glibc (crt-static), OpenSSL and zlib (git2's https/ssh through libgit2
# and libssh2). The explicit --target keeps RUSTFLAGS off build scripts and proc-macros.
target=$(rustc -vV | sed -n 's/^host: //p')
start=$(date +%s)
RUSTFLAGS='-C target-feature=+crt-static' OPENSSL_STATIC=1 LIBZ_SYS_STATIC=1 \
    ${CARGO:-cargo} build --release --locked --target "$target" -p sandbox-steps
bin=target/$target/release/sandbox-steps
echo "images/build.sh: built $bin in $(($(date +%s) - start)) s" >&2

# Static: no program interpreter, no shared library needed (a scratch image has none).
if readelf -l "$bin" | grep -q 'INTERP' || readelf -d "$bin" | grep -q '(NEEDED)'; then
    echo "images/build.sh: $bin is not statically linked:" >&2
    readelf -d "$bin" | grep '(NEEDED)' >&2 || true
    exit 1
fi
[ -s "$ca_bundle" ] || {
    echo "images/build.sh: no CA bundle at $ca_bundle (install ca-certificates)" >&2
    exit 1
}

rm -rf "$rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
install -m 0755 "$bin" "$rootfs/usr/local/bin/sandbox-steps"
# One link per step, relative (validate-params -> sandbox-steps), made by the executable itself
# so the list of steps is never repeated here.
"$rootfs/usr/local/bin/sandbox-steps" --install-links "$rootfs/usr/local/bin"
install -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$rootfs/tmp"
cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
# Without this file glibc asks DNS before /etc/hosts and stops at its answer; Kubernetes mounts
# /etc/hosts and /etc/resolv.conf into the pod, not nsswitch.conf.
echo 'hosts: files dns' > "$rootfs/etc/nsswitch.conf"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
echo "images/build.sh: root filesystem in $rootfs" >&2
