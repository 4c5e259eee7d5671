#!/bin/sh
# The openai npm client test: installs the pinned client (package-lock.json)
# into the build folder, synthesizes a small model, starts plumb serve on a
# free port with an API key, runs openai_client.mjs against it, and stops
# the server with SIGTERM (which must exit 0).
#
# Usage: run.sh PATH_TO_PLUMB WORK_DIR
set -eu
PLUMB=$1
WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../npm-ci.sh"
npm_ci "$HERE" "$WORK" openai
cp "$HERE/openai_client.mjs" "$WORK/"
MODEL=$WORK/tiny.gguf
[ -f "$MODEL" ] || "$PLUMB" synth --shape tiny --type Q8_0 "$MODEL" >/dev/null
printf 'ci sk-plumb-test-key-42\n' > "$WORK/keys"
# the last run's output goes first: the background job truncates it only
# once it runs, and the wait below must not read the old port
rm -f "$WORK/serve.out" "$WORK/serve.log"
"$PLUMB" serve "$MODEL" --alias tiny --port 0 -np 4 --ctx 512 --api-key-file "$WORK/keys" \
    > "$WORK/serve.out" 2> "$WORK/serve.log" &
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
PLUMB_URL=$URL PLUMB_MODEL=tiny PLUMB_KEY=sk-plumb-test-key-42 node "$WORK/openai_client.mjs" || rc=$?
kill -TERM $PID
wait $PID || { echo "plumb serve exited with $? after SIGTERM" >&2; cat "$WORK/serve.log" >&2; exit 1; }
trap - EXIT
[ $rc -eq 0 ] || { cat "$WORK/serve.log" >&2; exit $rc; }
