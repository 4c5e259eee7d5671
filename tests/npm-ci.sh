# Sourced by the tests that run npm packages (tests/node, tests/k8s):
# npm_ci SRC WORK PACKAGE installs the packages pinned by SRC's
# package.json and package-lock.json into WORK, unless WORK already holds
# PACKAGE installed from the same lock file.
npm_ci() {
    command -v node >/dev/null && command -v npm >/dev/null || {
        echo "node and npm are needed (scripts/install-deps.sh installs them)" >&2; exit 1; }
    mkdir -p "$2"
    if [ ! -f "$2/node_modules/$3/package.json" ] || ! cmp -s "$1/package-lock.json" "$2/package-lock.json"; then
        cp "$1/package.json" "$1/package-lock.json" "$2/"
        (cd "$2" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
