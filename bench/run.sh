#!/bin/sh
# make bench: the figures this stage of plumb is judged on, written as a
# Markdown table to bench/results/.
#
#   - peak RSS of a synthesized TinyLlama-1.1B Q4_0 (weights must be mapped,
#     not copied: RSS <= file size + KV cache + 100 MB);
#   - prompt and generation speed of the same run (scalar kernels for now).
#
# Usage: bench/run.sh PATH_TO_PLUMB
set -eu
PLUMB=${1:-build/release/plumb}
OUT_DIR=bench/results
WORK=build/bench
mkdir -p "$OUT_DIR" "$WORK"

MODEL=$WORK/tinyllama-1.1b-q4_0.gguf
if [ ! -f "$MODEL" ]; then
    echo "synthesizing $MODEL (once; about a minute)" >&2
    "$PLUMB" synth --shape tinyllama-1.1b --type Q4_0 "$MODEL" >&2
fi
CTX=2048
THREADS=$(nproc)
JSON=$WORK/run.json
"$PLUMB" run "$MODEL" -p "The quick brown fox jumps over the lazy dog because" -n 16 --temp 0 \
    --ctx $CTX -t "$THREADS" --json > "$JSON"

file_bytes=$(stat -c %s "$MODEL")
# KV cache at full context: 2 (K, V) x layers x ctx x kv heads x head size x 4 bytes
kv_bytes=$((2 * 22 * CTX * 4 * 64 * 4))
python_free_parse() {
    # tiny JSON field reader (no dependency): prints the number after "key":
    sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p" "$JSON" | head -1
}
rss=$(python_free_parse peak_rss_bytes)
prompt_s=$(python_free_parse prompt_s)
gen_s=$(python_free_parse gen_s)
n_prompt=$(tr -d ' \n' < "$JSON" | sed 's/.*"prompt_tokens":\[\([^]]*\)\].*/\1/' | tr ',' '\n' | wc -l)
limit=$((file_bytes + kv_bytes + 100 * 1000 * 1000))
verdict=$([ "$rss" -le "$limit" ] && echo "ok" || echo "OVER")

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cpu=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
date=$(date -u +%Y-%m-%dT%H:%MZ)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
RESULT=$OUT_DIR/bench-$(date -u +%Y%m%d-%H%M%S).md
{
    echo "# plumb bench, $date"
    echo
    echo "commit $commit, $cpu, $(nproc) CPUs, $THREADS threads, scalar kernels"
    echo
    echo "| model | file | KV cache (ctx $CTX) | peak RSS | limit (file + KV + 100 MB) | verdict | prompt t/s | gen t/s |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '| tinyllama-1.1b Q4_0 (synth) | %s | %s | %s | %s | %s | %.2f | %.2f |\n' \
        "$(mib "$file_bytes")" "$(mib "$kv_bytes")" "$(mib "$rss")" "$(mib "$limit")" "$verdict" \
        "$(awk -v n="$n_prompt" -v s="$prompt_s" 'BEGIN { print n / s }')" \
        "$(awk -v s="$gen_s" 'BEGIN { print 16 / s }')"
} > "$RESULT"
cat "$RESULT"
echo "written to $RESULT" >&2
[ "$verdict" = ok ]
