#!/bin/sh
# The container image is self-contained: scripts/image.sh builds it (no
# network) from the plumb under test, then its root file system alone runs
# `plumb --version` and serves a tiny model to plumb's serving bench, and
# stops on SIGTERM with status 0. Prints its size.
#
# Where it runs: `podman run` (--network host, the model mounted
# read-only), with the runtime podman chooses, else runc where installed;
# where podman cannot run a container on this machine (say, crun refuses a
# hybrid cgroup hierarchy, or raising a limit is not permitted), in a chroot
# of the unpacked image as user 10001 (private mount namespace with /proc,
# /sys and /dev). The reason for the fallback is printed. IMAGE_RUN=podman
# or IMAGE_RUN=chroot forces one way.
#
# Usage: run.sh PATH_TO_PLUMB WORK_DIR
set -eu
PLUMB=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
ROOTDIR=$(cd "$HERE/../.." && pwd)
MODE=${IMAGE_RUN:-auto}
[ "$(id -u)" -eq 0 ] || [ -s /etc/subuid ] || {
    echo "the image test builds with buildah: run it as root (or with subordinate ids, /etc/subuid)" >&2; exit 1; }
command -v podman >/dev/null || { echo "podman is needed (scripts/install-deps.sh installs it)" >&2; exit 1; }
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
VERSION=$("$PLUMB" --version | sed -n 's/^plumb //p')
TAG=localhost/plumb-test:$VERSION-$$
NAME=plumb-image-test-$$
cleanup() {
    podman rm -f "$NAME" >/dev/null 2>&1 || true
    buildah rmi "$TAG" >/dev/null 2>&1 || true
    [ -z "${ROOTFS:-}" ] || rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

# build: the same script as make image, from the plumb under test
rm -rf "$WORK/out"
sh "$ROOTDIR/scripts/image.sh" "$PLUMB" "$TAG" "$WORK/out"
ARCHIVE=$WORK/out/plumb-$VERSION.oci.tar

# the model, on a folder user 10001 can read
mkdir -p "$WORK/models"
chmod 755 "$WORK" "$WORK/models"
[ -f "$WORK/models/tiny.gguf" ] || "$PLUMB" synth --shape tiny --type Q8_0 "$WORK/models/tiny.gguf" >/dev/null
chmod 644 "$WORK/models/tiny.gguf"
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
# a sanitizer build's leak check needs ptrace, which containers may not allow
ENVS="ASAN_OPTIONS=detect_leaks=0"

# ---- how to run the image here ----
NOFILE=$(ulimit -n)
PODMAN_RUN="podman run --rm --network host --ulimit nofile=$NOFILE:$NOFILE --ulimit nproc=4096:4096 -e $ENVS"
try_podman() { # RUNTIME-OPTION
    out=$($PODMAN_RUN $1 "$TAG" --version 2>&1) && [ "$out" = "plumb $VERSION" ] && return 0
    WHY="$WHY; podman run${1:+ $1}: $(printf '%s' "$out" | tail -n 1)"
    return 1
}
WHY=""
RUNTIME=""
way=""
if [ "$MODE" != chroot ]; then
    if try_podman ""; then
        way=podman
    elif command -v runc >/dev/null && try_podman "--runtime runc"; then
        way=podman
        RUNTIME="--runtime runc"
    fi
fi
if [ -z "$way" ]; then
    [ "$MODE" != podman ] || { echo "podman cannot run the image here$WHY" >&2; exit 1; }
    [ "$MODE" = chroot ] || echo "podman cannot run containers on this machine${WHY}: the image's root file system runs in a chroot instead"
    way=chroot
    # unpack the OCI archive: index -> manifest -> its layers, in order
    ROOTFS=$(mktemp -d "$WORK/rootfs.XXXXXX")
    mkdir "$ROOTFS/oci"
    tar -xf "$ARCHIVE" -C "$ROOTFS/oci"
    layers=$(node -e '
const fs = require("fs"), d = process.argv[1];
const blob = (dg) => JSON.parse(fs.readFileSync(d + "/blobs/" + dg.replace(":", "/")));
const index = JSON.parse(fs.readFileSync(d + "/index.json"));
const man = blob(index.manifests[0].digest);
for (const l of man.layers) console.log(l.mediaType + " " + d + "/blobs/" + l.digest.replace(":", "/"));
' "$ROOTFS/oci")
    mkdir "$ROOTFS/root"
    echo "$layers" | while read -r type file; do
        case $type in
            *gzip*) tar -xzpf "$file" -C "$ROOTFS/root" --numeric-owner ;;
            *zstd*) zstd -dc "$file" | tar -xpf - -C "$ROOTFS/root" --numeric-owner ;;
            *) tar -xpf "$file" -C "$ROOTFS/root" --numeric-owner ;;
        esac
    done
    R=$ROOTFS/root
    mkdir -p "$R/proc" "$R/sys" "$R/dev" "$R/models"
fi

# in_image SECONDS ARGS...: plumb with ARGS inside the image, in the foreground
in_image() {
    if [ $way = podman ]; then
        # shellcheck disable=SC2086
        $PODMAN_RUN $RUNTIME --name "$NAME" -v "$WORK/models:/models:ro" "$TAG" "$@"
    else
        # unshare execs sh, which execs env, chroot and plumb: one process,
        # the background job's child
        unshare -m --propagation private sh -c '
            R=$1; shift
            mount -t proc proc "$R/proc" && mount --rbind /sys "$R/sys" && mount --rbind /dev "$R/dev" &&
            mount --bind "$MODELS" "$R/models" && mount -o remount,bind,ro "$R/models" &&
            exec env -i PLUMB_HOME=/var/lib/plumb '"$ENVS"' "$CHROOT" --userspec=10001:10001 "$R" \
                 /usr/local/bin/plumb "$@"' sh "$R" "$@"
    fi
}
export MODELS="$WORK/models"
CHROOT=$(command -v chroot)
export CHROOT

# 1. plumb --version
got=$(in_image --version)
[ "$got" = "plumb $VERSION" ] || { echo "the image says '$got', not 'plumb $VERSION'" >&2; exit 1; }

# 2. serve the model: answered through plumb's serving bench, drained on SIGTERM
rm -f "$WORK/serve.log"
in_image serve /models/tiny.gguf --host 127.0.0.1 --port "$PORT" --alias tiny -np 2 --ctx 256 \
    > "$WORK/serve.out" 2> "$WORK/serve.log" &
PID=$!
ok=""
for i in $(seq 1 150); do
    if "$PLUMB" bench --serve "http://127.0.0.1:$PORT" --concurrency 2 --requests 2 --prompt-tokens 8 --gen-tokens 8 \
        --json > "$WORK/bench.json" 2>/dev/null; then
        ok=1
        break
    fi
    kill -0 $PID 2>/dev/null || break
    sleep 0.2
done
[ -n "$ok" ] || { echo "the image did not serve:" >&2; cat "$WORK/serve.log" >&2; exit 1; }
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1]));
const l = r.levels[0];
if (l.requests !== 4 || l.failed !== 0 || l.tokens !== 32) throw new Error("bench: " + JSON.stringify(l));
' "$WORK/bench.json"
if [ $way = podman ]; then
    podman stop -t 20 "$NAME" >/dev/null
else
    child=$(pgrep -P $PID)
    [ -n "$child" ] && [ "$(readlink "/proc/$child/root")" = "$R" ] || {
        echo "cannot find the chroot's plumb (child of $PID: '$child')" >&2; exit 1; }
    kill -TERM "$child"
fi
rc=0
wait $PID || rc=$?
[ $rc -eq 0 ] || { echo "plumb serve in the image exited with $rc after SIGTERM:" >&2; cat "$WORK/serve.log" >&2; exit 1; }
grep -q "SIGTERM: draining" "$WORK/serve.log" || { echo "no drain in the log:" >&2; cat "$WORK/serve.log" >&2; exit 1; }

[ -z "$WHY" ] || [ $way = chroot ] || echo "(podman's own runtime did not run it here${WHY})"
echo "image: self-contained, run by $way${RUNTIME:+ ($RUNTIME)}: plumb --version, 4 streamed requests served from"\
     "/models/tiny.gguf, SIGTERM drained with status 0"
sed -n 's/^size *//p' "$WORK/out/image.txt" | sed 's/^/image size: /'
