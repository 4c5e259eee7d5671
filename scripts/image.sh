#!/bin/sh
# plumb's container image (make image): an OCI image from scratch holding
# only plumb, the shared libraries it links (as ldd lists them, the dynamic
# loader included), CA certificates (for pulls over https), a user plumb
# (10001) and its store folder /var/lib/plumb. Built with buildah from the
# files of this machine: no base image, no network.
#
# It is committed to the local containers storage as TAG (podman and
# buildah see it: podman run TAG --version) and written as an OCI archive
# (skopeo copy oci-archive:FILE docker://REGISTRY/plumb:VERSION, or podman
# load -i FILE, puts it elsewhere).
#
# Usage: scripts/image.sh PLUMB_BINARY [TAG] [OUT_DIR]
#   TAG      default localhost/plumb:VERSION (what plumb service k8s names)
#   OUT_DIR  default build/image: plumb-VERSION.oci.tar and image.txt (tag,
#            image id, sizes)
#
# As root, or as a user with subordinate ids (/etc/subuid): buildah then
# works in a user namespace (buildah unshare).
set -eu
PLUMB=$1
[ -x "$PLUMB" ] || { echo "image.sh: $PLUMB is not an executable (make builds it)" >&2; exit 1; }
VERSION=$("$PLUMB" --version | sed -n 's/^plumb //p')
[ -n "$VERSION" ] || { echo "image.sh: $PLUMB --version says no version" >&2; exit 1; }
TAG=${2:-localhost/plumb:$VERSION}
OUT=${3:-build/image}
command -v buildah >/dev/null || { echo "image.sh: buildah is needed (scripts/install-deps.sh installs it)" >&2; exit 1; }
CA=/etc/ssl/certs/ca-certificates.crt
[ -f "$CA" ] || { echo "image.sh: $CA is missing (the ca-certificates package)" >&2; exit 1; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STAGE=$(mktemp -d "$OUT/stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root
mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc/ssl/certs" "$ROOT/var/lib/plumb" "$ROOT/tmp"
cp "$PLUMB" "$ROOT/usr/local/bin/plumb"
chmod 755 "$ROOT/usr/local/bin/plumb"

# the libraries, where the loader looks for them (the paths ldd resolved)
libs=$(ldd "$PLUMB" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
[ -n "$libs" ] || { echo "image.sh: ldd lists no libraries for $PLUMB" >&2; exit 1; }
for lib in $libs; do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
# the loader's cache, so that lookups do not depend on its built-in paths
if command -v ldconfig >/dev/null 2>&1; then
    printf '%s\n' $libs | xargs -n1 dirname | sort -u > "$ROOT/etc/ld.so.conf"
    ldconfig -r "$ROOT" 2>/dev/null || true
fi

cp "$CA" "$ROOT/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/nonexistent\nplumb:x:10001:10001:plumb:/var/lib/plumb:/nonexistent\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\nplumb:x:10001:\n' > "$ROOT/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$ROOT/etc/nsswitch.conf"
chmod 1777 "$ROOT/tmp"

# one layer: everything root's but the store, which is plumb's
tar -C "$ROOT" --numeric-owner --owner=0 --group=0 --exclude=./var/lib/plumb -cf "$STAGE/layer.tar" .
tar -C "$ROOT" --numeric-owner --owner=10001 --group=10001 -rf "$STAGE/layer.tar" ./var/lib/plumb

files=$(du -sb "$ROOT" | cut -f1)

build() {
    old=$(buildah images --noheading --quiet "$TAG" 2>/dev/null | head -n 1 || true)
    ctr=$(buildah from --quiet scratch)
    if ! buildah add --quiet "$ctr" "$STAGE/layer.tar" / >/dev/null; then
        buildah rm "$ctr" >/dev/null 2>&1 || true
        return 1
    fi
    buildah config --entrypoint '["/usr/local/bin/plumb"]' --cmd '["serve", "--config", "/etc/plumb/config/plumb.ini"]' \
        --user 10001:10001 --workingdir /var/lib/plumb --env PLUMB_HOME=/var/lib/plumb --port 8080 \
        --stop-signal SIGTERM --label org.opencontainers.image.title=plumb \
        --label org.opencontainers.image.version="$VERSION" \
        --label org.opencontainers.image.description="plumb: local LLMs, one binary with its own inference engine" \
        "$ctr" || { buildah rm "$ctr" >/dev/null 2>&1; return 1; }
    buildah commit --quiet --format oci --rm "$ctr" "$TAG" >/dev/null || { buildah rm "$ctr" >/dev/null 2>&1; return 1; }
    # the image this tag named before, now nameless
    new=$(buildah images --noheading --quiet "$TAG" | head -n 1)
    [ -z "$old" ] || [ "$old" = "$new" ] || buildah rmi "$old" >/dev/null 2>&1 || true
    rm -f "$OUT/plumb-$VERSION.oci.tar"
    buildah push --quiet "$TAG" "oci-archive:$OUT/plumb-$VERSION.oci.tar:$TAG" >/dev/null
}
if [ "$(id -u)" -eq 0 ]; then
    build
else
    # rootless: the ownership in the layer needs the user namespace
    export STAGE OUT VERSION TAG
    buildah unshare sh -eu -c "$(sed -n '/^build() {/,/^}/p' "$0"); build"
fi

id=$(buildah images --noheading --format '{{.ID}}' "$TAG" | head -n 1)
size=$(buildah images --noheading --format '{{.Size}}' "$TAG" | head -n 1)
archive=$(stat -c %s "$OUT/plumb-$VERSION.oci.tar")
{
    echo "tag      $TAG"
    echo "id       $id"
    echo "size     $size in the containers storage; files $files bytes; archive $archive bytes"
    echo "archive  $OUT/plumb-$VERSION.oci.tar"
} | tee "$OUT/image.txt"
