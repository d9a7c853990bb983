#!/usr/bin/env bash
# build.sh — build the hms-node OCI image from scratch without a Docker
# daemon: a static (CGO_ENABLED=0) binary and the CA bundle, with buildah.
#
#   deploy/image/build.sh                      # localhost/hms-node:<version> and :latest
#   IMAGE=registry.example/hms-node deploy/image/build.sh
#   OCI_ARCHIVE=/tmp/hms-node.tar deploy/image/build.sh   # also write an archive
#
# STORAGE_ROOT, STORAGE_RUNROOT and STORAGE_DRIVER select a containers
# storage other than the default (the image test uses its own, with vfs).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
IMAGE=${IMAGE:-localhost/hms-node}
VERSION=${VERSION:-$(git -C "$repo" describe --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}

command -v buildah >/dev/null || { echo "image: buildah not found (apt-get install buildah, or make deps)" >&2; exit 1; }

storage=()
[[ -n ${STORAGE_ROOT:-} ]] && storage+=(--root "$STORAGE_ROOT")
[[ -n ${STORAGE_RUNROOT:-} ]] && storage+=(--runroot "$STORAGE_RUNROOT")
[[ -n ${STORAGE_DRIVER:-} ]] && storage+=(--storage-driver "$STORAGE_DRIVER")

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
(cd "$repo" && CGO_ENABLED=0 "$GO" build -trimpath \
	-ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT" -o "$ctx/hms-node" ./cmd/hms-node)
cp /etc/ssl/certs/ca-certificates.crt "$ctx/"

buildah "${storage[@]}" bud --quiet --layers=false --pull=never \
	--label "org.opencontainers.image.title=hms-node" \
	--label "org.opencontainers.image.version=$VERSION" \
	--label "org.opencontainers.image.revision=$COMMIT" \
	-f "$repo/deploy/image/Containerfile" -t "$IMAGE:$VERSION" -t "$IMAGE:latest" "$ctx"
if [[ -n ${OCI_ARCHIVE:-} ]]; then
	buildah "${storage[@]}" push --quiet "$IMAGE:$VERSION" "oci-archive:$OCI_ARCHIVE:$IMAGE:$VERSION"
fi
echo "image: built $IMAGE:$VERSION"
