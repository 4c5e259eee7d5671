#!/bin/sh
# The module graph of src/, from the #include lines: fails when modules
# include each other in a cycle, when a module reaches above its layer,
# or when a client of the public API (cli/, src/server) includes an
# internal header. Prints the graph it checked.
#
# Public headers (include/plumb/NAME.h) count as their implementing
# module: quantize, synth, bench, doctor, service, fleet and tune are src/tools',
# profile (the parts of a forward pass) is src/model's.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

module_of_public() {
    case "$1" in
    quantize | synth | bench | doctor | service | fleet | tune) echo tools ;;
    profile) echo model ;;
    *) echo "$1" ;;
    esac
}

edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
for dir in src/*/; do
    mod=$(basename "$dir")
    echo "$mod $mod" >>"$edges" # every module is a node
    grep -ho '^#include "[a-z0-9_]*/[a-z0-9_]*\.h"' "$dir"*.c "$dir"*.h 2>/dev/null |
        sed 's/#include "\(.*\)\/\(.*\)\.h"/\1 \2/' | sort -u |
        while read -r dep name; do
            if [ "$dep" = plumb ]; then dep=$(module_of_public "$name"); fi
            [ "$dep" = "$mod" ] || echo "$mod $dep"
        done >>"$edges"
done

# the public headers include each other: their modules depend likewise
for h in include/plumb/*.h; do
    mod=$(module_of_public "$(basename "$h" .h)")
    grep -o '^#include "plumb/[a-z0-9_]*\.h"' "$h" | sed 's/#include "plumb\/\(.*\)\.h"/\1/' |
        while read -r name; do
            dep=$(module_of_public "$name")
            [ "$dep" = "$mod" ] || echo "$mod $dep"
        done >>"$edges"
done

status=0
# a cycle: tsort finds it
if ! sort -u "$edges" | tsort >/dev/null 2>"$edges.err"; then
    echo "check-layers: modules include each other in a cycle:" >&2
    cat "$edges.err" >&2
    status=1
fi
rm -f "$edges.err"

# the layers, bottom up: a module may include its own layer's modules
# only where the graph above says so, and any lower layer's
layer() {
    case "$1" in
    base) echo 0 ;;
    gguf | quant) echo 1 ;;
    kernels) echo 2 ;;
    ops) echo 3 ;;
    kv | model | tokenizer | sampler | template) echo 4 ;;
    chat) echo 5 ;;
    engine) echo 6 ;;
    survey | store) echo 7 ;;
    plan | tools | server | config) echo 8 ;;
    *) echo 99 ;;
    esac
}
sort -u "$edges" | while read -r a b; do
    [ "$a" = "$b" ] && continue
    if [ "$(layer "$b")" -gt "$(layer "$a")" ]; then
        echo "check-layers: $a (layer $(layer "$a")) includes $b (layer $(layer "$b")), above it" >&2
        echo x
    fi
done | grep -q x && status=1

# clients of the public API
bad=$(grep -n '^#include "' cli/*.c cli/*.h src/server/*.c src/server/*.h |
    grep -v '"plumb/' | grep -v 'cli/[a-z_]*\.[ch]:[0-9]*:#include "\(cli\|gen_common\)\.h"' |
    grep -v 'src/server/[a-z_]*\.[ch]:[0-9]*:#include "\(server\|base\)/' || true)
if [ -n "$bad" ]; then
    echo "check-layers: internal headers included by a client of the public API:" >&2
    echo "$bad" >&2
    status=1
fi

echo "module graph (A B: A includes B):"
sort -u "$edges" | awk '$1 != $2' | tr '\n' ';' | sed 's/;/; /g'
echo
[ $status = 0 ] && echo "check-layers: no cycle; every module includes only its layer or lower ones; cli and server use the public headers"
exit $status
