#!/bin/sh
# The openai npm client test: installs the pinned client, zod and ajv
# (package-lock.json) into the build folder, synthesizes a small model,
# starts plumb serve on a free port with an API key (and the reference
# data's encoder model beside it when present), runs openai_client.mjs and
# schemas.mjs against it, and stops the server with SIGTERM (which must
# exit 0).
#
# Usage: run.sh PATH_TO_PLUMB WORK_DIR
set -eu
PLUMB=$1
WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../npm-ci.sh"
npm_ci "$HERE" "$WORK" openai
cp "$HERE/openai_client.mjs" "$HERE/schemas.mjs" "$WORK/"
MODEL=$WORK/tiny.gguf
[ -f "$MODEL" ] || "$PLUMB" synth --shape tiny --type Q8_0 "$MODEL" >/dev/null
printf 'ci sk-plumb-test-key-42\n' > "$WORK/keys"
# the encoder model of the reference data, when present, serves embeddings
# to compare with llama.cpp's
TESTDATA=${PLUMB_TESTDATA:-$HERE/../../../shared/testdata}
BERT=$TESTDATA/tiny-bert-q8_0.gguf
{
    printf '[server]\nport = 0\napi_key_file = %s\ncors_origins = https://app.example\n\n' "$WORK/keys"
    printf '[model tiny]\nsource = %s\nparallel = 4\nctx = 2048\n' "$MODEL"
    if [ -f "$BERT" ]; then printf '\n[model bert]\nsource = %s\nparallel = 4\n' "$BERT"; fi
} > "$WORK/plumb.ini"
# the last run's output goes first: the background job truncates it only
# once it runs, and the wait below must not read the old port
rm -f "$WORK/serve.out" "$WORK/serve.log"
"$PLUMB" serve --config "$WORK/plumb.ini" > "$WORK/serve.out" 2> "$WORK/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
i=0
until grep -q "listening on" "$WORK/serve.out" "$WORK/serve.log" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 300 ] || ! kill -0 $PID 2>/dev/null; then
        echo "plumb serve did not start:" >&2; cat "$WORK/serve.log" >&2; exit 1
    fi
    sleep 0.1
done
URL=$(sed -n 's/^listening on //p' "$WORK/serve.out")
[ -n "$URL" ] || URL=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$WORK/serve.log" | head -1)
rc=0
export PLUMB_URL=$URL PLUMB_MODEL=tiny PLUMB_KEY=sk-plumb-test-key-42 PLUMB_REFERENCE=$TESTDATA/reference-embeddings.json
if [ -f "$BERT" ]; then export PLUMB_BERT=bert; fi
node "$WORK/openai_client.mjs" || rc=$?
if [ $rc -eq 0 ]; then node "$WORK/schemas.mjs" || rc=$?; fi
kill -TERM $PID
wait $PID || { echo "plumb serve exited with $? after SIGTERM" >&2; cat "$WORK/serve.log" >&2; exit 1; }
trap - EXIT
[ $rc -eq 0 ] || { cat "$WORK/serve.log" >&2; exit $rc; }
