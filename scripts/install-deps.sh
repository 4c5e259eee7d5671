#!/bin/sh
# Installs the Debian packages plumb needs to build and test, only those that
# are missing. Safe to run repeatedly: when everything is present it does
# nothing and needs no privileges. Runs apt-get as root, or through sudo.
# Extra package names given as arguments are installed too (CI adds clang).
#
#   build:  gcc, make, cmake, pkg-config
#   libs:   libjansson-dev (JSON output and reading reference data),
#           libpcre2-dev (tokenizer pre-split regexes with Unicode properties),
#           libcairo2-dev (plumb tco's chart: one drawing for SVG and PNG),
#           libmicrohttpd-dev (plumb serve's HTTP server),
#           libinih-dev (plumb serve --config: the INI configuration file),
#           libsqlite3-dev (the model store's registry),
#           libcurl4-openssl-dev (plumb pull over http/https),
#           libssl-dev (SHA-256 of model blobs, from libcrypto),
#           libarchive-dev (plumb export / import: air-gap bundles as tar)
#   tests:  libcmocka-dev (unit test framework), systemd (systemd-analyze
#           verify checks the service unit), nodejs and npm (the openai
#           npm client runs against plumb serve; tests/node; the
#           Kubernetes manifests are validated with kubernetes-models,
#           tests/k8s), haproxy and nginx (replicas behind a real load
#           balancer: tests/test_scale.c), buildah and podman (make image
#           and its test), ca-certificates (copied into the image),
#           chromium (the console's page driven in a real browser by
#           puppeteer-core: tests/browser)
#
# The balancers' own services are not started by their installation here
# (a policy-rc.d that says no, while none was there) and are disabled
# afterwards: plumb's tests start their own, on loopback, and nothing
# should listen on port 80 because make test ran.
set -eu

PACKAGES="gcc make cmake pkg-config libjansson-dev libpcre2-dev libcairo2-dev libmicrohttpd-dev libinih-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev libarchive-dev libcmocka-dev systemd haproxy nginx buildah podman ca-certificates chromium $*"

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done

# Node.js and npm run the openai npm client test; a machine may have them
# from elsewhere (nodesource), so they are looked for as commands
if ! command -v node >/dev/null 2>&1; then
    missing="$missing nodejs"
fi
if ! command -v npm >/dev/null 2>&1; then
    missing="$missing npm"
fi

[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing packages:$missing (and no apt-get here; install them by hand)" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-deps: missing packages:$missing; run as root or install sudo" >&2
    exit 1
fi

echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
daemons=""
for d in haproxy nginx; do
    case " $missing " in *" $d "*) daemons="$daemons $d" ;; esac
done
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ -n "$daemons" ] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# written by plumb scripts/install-deps.sh while installing\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
fi
rc=0
$SUDO apt-get update -qq || rc=$?
# shellcheck disable=SC2086
[ $rc -ne 0 ] || $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null || rc=$?
[ -z "$own_policy" ] || $SUDO rm -f "$policy"
if [ -n "$daemons" ] && [ -d /run/systemd/system ]; then
    # shellcheck disable=SC2086
    $SUDO systemctl disable --now $daemons >/dev/null 2>&1 || true
fi
exit $rc
