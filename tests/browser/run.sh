#!/bin/sh
# The console's browser test: installs puppeteer-core (package-lock.json)
# into the build folder, synthesizes a model with a context long enough to
# stop an answer in its middle, starts plumb serve on a free port with a user key
# and an admin key, and drives the page in Debian's headless Chromium
# (console.mjs). Screenshots of each page go to WORK/shots (or to
# $PLUMB_SCREENSHOTS, which is how docs/console-*.png are made).
#
# Usage: run.sh PATH_TO_PLUMB WORK_DIR
set -eu
PLUMB=$1
WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || { echo "$CHROMIUM is missing (scripts/install-deps.sh installs Debian's chromium)" >&2; exit 1; }
. "$HERE/../npm-ci.sh"
npm_ci "$HERE" "$WORK" puppeteer-core
cp "$HERE/console.mjs" "$WORK/"
# the tiny shape with a long context: an answer of 3500 tokens runs for
# seconds (long enough to stop it) even in the release build
MODEL=$WORK/console.gguf
[ -f "$MODEL" ] || "$PLUMB" synth --shape tiny --dims ctx=4096 --type Q8_0 "$MODEL" >/dev/null
printf 'admin sk-console-admin-1 admin\nuser sk-console-user-22\n' > "$WORK/keys"
chmod 600 "$WORK/keys"
rm -rf "$WORK/home" # the usage table of this run only
mkdir -p "$WORK/home"
{
    printf '[server]\nport = 0\napi_key_file = %s\nui = on\n\n' "$WORK/keys"
    printf '[model console]\nsource = %s\nparallel = 2\nctx = 4096\n' "$MODEL"
} > "$WORK/plumb.ini"
rm -f "$WORK/serve.out" "$WORK/serve.log"
PLUMB_HOME=$WORK/home "$PLUMB" serve --config "$WORK/plumb.ini" > "$WORK/serve.out" 2> "$WORK/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
i=0
until grep -q "listening on" "$WORK/serve.out" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 300 ] || ! kill -0 $PID 2>/dev/null; then
        echo "plumb serve did not start:" >&2; cat "$WORK/serve.log" >&2; exit 1
    fi
    sleep 0.1
done
URL=$(sed -n 's/^listening on //p' "$WORK/serve.out")
rc=0
PLUMB_URL=$URL PLUMB_ADMIN_KEY=sk-console-admin-1 PLUMB_USER_KEY=sk-console-user-22 CHROMIUM=$CHROMIUM \
    SHOTS=${PLUMB_SCREENSHOTS:-$WORK/shots} node "$WORK/console.mjs" || rc=$?
kill -TERM $PID
wait $PID || { echo "plumb serve exited with $? after SIGTERM" >&2; cat "$WORK/serve.log" >&2; exit 1; }
trap - EXIT
[ $rc -eq 0 ] || { cat "$WORK/serve.log" >&2; exit $rc; }
