#!/usr/bin/env bash
# Exports a built image as an OCI archive and checks it without running a container (this machine
# may start none): images/verify.py unpacks the layers, checks size, config and tree, and runs the
# steps chrooted into the unpacked tree, with TLS and DNS against local servers.
#
#   images/verify.sh IMAGE VERSION REVISION ARCHIVE
#
# BUILDAH (the buildah command with its storage flags) exports from buildah's storage; with
# BUILDER=docker, `docker save` does (Docker 25 and later write an OCI layout).
set -euo pipefail
image=${1:?usage: images/verify.sh IMAGE VERSION REVISION ARCHIVE}
version=${2:?} revision=${3:?} archive=${4:?}
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "images/verify.sh: needs root (chroot, DNS on port 53)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "images/verify.sh: needs openssl (apt-get install openssl)" >&2; exit 1; }

rm -f "$archive"
mkdir -p "$(dirname "$archive")"
if [ "${BUILDER:-buildah}" = docker ]; then
    docker save -o "$archive" "$image"
else
    ${BUILDAH:-buildah} push --quiet "$image" "oci-archive:$archive"
fi
python3 images/verify.py "$archive" "$version" "$revision"
