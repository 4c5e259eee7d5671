#!/bin/sh
# plumb service k8s: renders manifests for a configuration whose model is in
# a fresh store, and validates them (validate.mjs) with the pinned
# kubernetes-models and yaml packages (package-lock.json), installed into
# the build folder; then checks that bad input is refused with a message.
#
# Usage: run.sh PATH_TO_PLUMB WORK_DIR
set -eu
PLUMB=$1
WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../npm-ci.sh"
npm_ci "$HERE" "$WORK" kubernetes-models
cp "$HERE/validate.mjs" "$WORK/"

# a store with the model, as the technician's machine has it
export PLUMB_HOME="$WORK/store"
rm -rf "$PLUMB_HOME" "$WORK"/*.yaml "$WORK"/*.json
[ -f "$WORK/tiny.gguf" ] || "$PLUMB" synth --shape tiny --type Q8_0 "$WORK/tiny.gguf" >/dev/null
"$PLUMB" pull "$WORK/tiny.gguf" --name tiny:1 >/dev/null 2>&1
printf 'ci sk-plumb-k8s-test\nops sk-plumb-k8s-ops\n' > "$WORK/keys"
chmod 600 "$WORK/keys"
cat > "$WORK/full.ini" <<INI
[server]
port = 8080
api_key_file = $WORK/keys
drain_timeout = 20
pid_file = /run/plumb/plumb.pid
[model a]
source = tiny:1
parallel = 1
[model b]
source = tiny:1
parallel = 1
INI
cat > "$WORK/open.ini" <<INI
[server]
port = 8080
insecure = yes
threads = 2
[model a]
source = tiny:1
parallel = 1
INI

# what the checks compare with: plumb's own estimate of the model at these
# settings (one slot, its context), its digest, the version
"$PLUMB" show tiny:1 --json > "$WORK/show.json"
"$PLUMB" ls --json > "$WORK/ls.json"
node -e '
const fs = require("fs"), w = process.argv[1];
const show = JSON.parse(fs.readFileSync(w + "/show.json")), ls = JSON.parse(fs.readFileSync(w + "/ls.json"));
if (show.memory.slots !== 1) throw new Error("plumb show estimates " + show.memory.slots + " slots");
const m = ls.models.find((x) => x.name === "tiny:1");
fs.writeFileSync(w + "/facts.json", JSON.stringify({memory_total_bytes: show.memory.total_bytes,
  digest: m.digest.replace(/^sha256:/, ""), version: process.argv[2]}));
' "$WORK" "$("$PLUMB" --version | sed 's/^plumb //')"

k8s() { "$PLUMB" service k8s "$@"; }
for fmt in yaml json; do
    j=""; [ $fmt = json ] && j=--json
    k8s --config "$WORK/full.ini" --mirror http://mirror.example:8080/plumb/ --replicas 3 --cpus 3 --hpa 2:6:60 \
        --storage-class fast --namespace models --prestop 7 $j -o "$WORK/full.$fmt" --force >/dev/null
    k8s --config "$WORK/full.ini" --mirror https://mirror.example/plumb --cpus 1 --name llm --keys-secret team-keys \
        --image "registry.example:5000/ai/plumb:1.2@sha256:$(printf 'a%.0s' $(seq 64))" $j > "$WORK/secret.$fmt"
    k8s --config "$WORK/open.ini" --mirror http://10.0.0.5/models $j > "$WORK/open.$fmt"
done
node "$WORK/validate.mjs" "$WORK"

# the pods' configuration is one plumb reads
"$PLUMB" service lb --kind haproxy --backend http://127.0.0.1:1 --config "$WORK/pod.ini" --print >/dev/null

# refused, with a message naming the problem (status 1), or a usage error (2)
fails=0
refuse() { # STATUS EXPECTED-TEXT ARGS...
    want=$1; text=$2; shift 2
    set +e
    out=$("$PLUMB" service k8s "$@" 2>&1 >/dev/null)
    got=$?
    set -e
    if [ $got -ne "$want" ] || ! printf '%s' "$out" | grep -qF -- "$text"; then
        echo "not refused as expected (status $got, want $want, '$text'): plumb service k8s $*" >&2
        echo "$out" >&2
        fails=$((fails + 1))
    fi
}
M="--mirror http://mirror.example/plumb"
refuse 1 "name 'Plumb'" --config "$WORK/full.ini" $M --cpus 1 --name Plumb
refuse 1 "name 'a-very-long-name-that-does-not-fit-in-forty-chars'" --config "$WORK/full.ini" $M --cpus 1 \
    --name a-very-long-name-that-does-not-fit-in-forty-chars
refuse 1 "namespace 'a_b'" --config "$WORK/full.ini" $M --cpus 1 --namespace a_b
refuse 1 "image 'Plumb:1'" --config "$WORK/full.ini" $M --cpus 1 --image Plumb:1
refuse 1 "image 'plumb:'" --config "$WORK/full.ini" $M --cpus 1 --image plumb:
refuse 1 "image 'a//b'" --config "$WORK/full.ini" $M --cpus 1 --image a//b
refuse 1 "image 'plumb/:1'" --config "$WORK/full.ini" $M --cpus 1 --image plumb/:1
refuse 1 "image 'a:b:c'" --config "$WORK/full.ini" $M --cpus 1 --image a:b:c
refuse 1 "scheme" --config "$WORK/full.ini" --mirror ftp://mirror.example/ --cpus 1
refuse 1 "in the path" --config "$WORK/full.ini" --mirror 'http://mirror.example/$(HOME)' --cpus 1
refuse 1 "port 0" --config "$WORK/full.ini" --mirror http://mirror.example:0/ --cpus 1
refuse 1 "storage '10GB'" --config "$WORK/full.ini" $M --cpus 1 --storage 10GB
refuse 1 "storage class 'Fast'" --config "$WORK/full.ini" $M --cpus 1 --storage-class Fast
refuse 2 "--hpa" --config "$WORK/full.ini" $M --cpus 1 --hpa 3:2
refuse 2 "--replicas" --config "$WORK/full.ini" $M --cpus 1 --replicas 0
refuse 2 "--mirror" --config "$WORK/full.ini" --cpus 1
refuse 1 "threads = 0" --config "$WORK/full.ini" $M
printf '[server]\nport = 8080\n[model a]\nsource = tiny:1\n' > "$WORK/nokeys.ini"
refuse 1 "has no api_key_file" --config "$WORK/nokeys.ini" $M --cpus 1
printf '[server]\nport = 0\ninsecure = yes\n[model a]\nsource = tiny:1\n' > "$WORK/port0.ini"
refuse 1 "fixed port" --config "$WORK/port0.ini" $M --cpus 1
printf '[server]\ninsecure = yes\n[model a]\nsource = %s\n' "$WORK/tiny.gguf" > "$WORK/file.ini"
refuse 1 "is a file" --config "$WORK/file.ini" $M --cpus 1
printf '[server]\ninsecure = yes\n[model a]\nsource = nope:1\n' > "$WORK/missing.ini"
refuse 1 "nope:1" --config "$WORK/missing.ini" $M --cpus 1
printf '[server]\ninsecure = yes\nstore = %s\n[model a]\nsource = tiny:1\n' "$PLUMB_HOME;x" > "$WORK/semi.ini"
refuse 1 "store" --config "$WORK/semi.ini" $M --cpus 1
[ $fails -eq 0 ] || exit 1
echo "kubernetes manifests: bad input refused with its reason"
