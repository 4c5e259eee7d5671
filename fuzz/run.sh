#!/bin/sh
# Runs the libFuzzer targets built in BUILD (the fuzz preset), each for
# SECONDS, one after the other, and prints a table of what each did.
#
#   fuzz/run.sh BUILD SECONDS [TARGET...]     (make fuzz does this)
#
# Each target starts from its working corpus (BUILD/work/corpus/TARGET,
# kept between runs) and its seeds (fuzz/corpus/TARGET), with its
# dictionary (fuzz/dict), a memory limit (-rss_limit_mb, also the largest
# single allocation) and a time limit per input (-timeout): a crash, a
# sanitizer report, a leak, a hang or a memory blow-up stops it and counts
# as a failure. The input that caused it is saved in fuzz/findings/TARGET/
# (not tracked by git); once the defect is fixed it goes into
# fuzz/regressions/TARGET/, which the test suite replays. Logs are in
# BUILD/work/logs. Environment: FUZZ_RSS_MB (default 2048), FUZZ_TIMEOUT
# (seconds per input; default 10, 30 for the targets that render
# templates), FUZZ_FLAGS (more libFuzzer flags), FUZZ_SUMMARY (the table's
# file, default BUILD/work/summary.txt: give each of two runs at once its
# own; they must not share a target either, whose corpus and log they
# would both write).
set -u
if [ $# -lt 2 ]; then
    echo "usage: $0 BUILD SECONDS [TARGET...]" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
shift 2
src=$(cd "$(dirname "$0")" && pwd)
targets=${*:-gguf model oai template chat tokenizer config bundle_tar bundle_manifest json grammar schema sums http download}
rss=${FUZZ_RSS_MB:-2048}
work=$build/work
mkdir -p "$work/logs"

# per target: the largest input and the dictionary
max_len() {
    case $1 in
    gguf | bundle_tar) echo 65536 ;;
    template | chat | oai) echo 16384 ;;
    model) echo 128 ;;
    *) echo 4096 ;;
    esac
}
dict() {
    case $1 in
    gguf) echo gguf ;;
    template) echo jinja ;;
    config) echo ini ;;
    tokenizer) echo tokenizer ;;
    bundle_tar) echo bundle ;;
    http) echo http ;;
    download) echo download ;;
    model | sums) echo none ;;
    *) echo json ;;
    esac
}

# seconds an input may take: a template that reaches the renderer's
# budget (2 million iterations) takes about 9 s under the sanitizers
timeout_of() {
    case $1 in
    template | chat | gguf) echo "${FUZZ_TIMEOUT:-30}" ;;
    *) echo "${FUZZ_TIMEOUT:-10}" ;;
    esac
}

# "cov: 123 ft: 456 corp: 78/9Kb" of the last status line, as "123 456 78"
coverage() {
    grep -E '^#[0-9]+' "$1" | tail -n 1 |
        sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/\1 \2 \3/p'
}
stat_of() {
    sed -n "s/^stat::$2: *\([0-9]*\).*/\1/p" "$1" | tail -n 1
}

failed=""
summary=${FUZZ_SUMMARY:-$work/summary.txt}
printf '%-16s %7s %12s %9s %7s %8s %7s %8s  %s\n' target seconds executions exec/s cov features corpus rss_mb \
    result >"$summary"
for t in $targets; do
    bin=$build/fuzz/fuzz_$t
    if [ ! -x "$bin" ]; then
        echo "fuzz: $bin is not built" >&2
        printf '%-16s %7s %12s %9s %7s %8s %7s %8s  %s\n' "$t" - - - - - - - "NOT BUILT" >>"$summary"
        failed="$failed $t"
        continue
    fi
    corpus=$work/corpus/$t
    findings=$src/findings/$t
    log=$work/logs/$t.log
    mkdir -p "$corpus" "$findings"
    before=$work/findings-before.$t
    ls "$findings" >"$before" 2>/dev/null
    echo "== fuzz_$t: $seconds s (log: $log)"
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$seconds" -rss_limit_mb="$rss" -timeout="$(timeout_of "$t")" -max_len="$(max_len "$t")" \
        $([ "$(dict "$t")" = none ] || echo "-dict=$src/dict/$(dict "$t").dict") -artifact_prefix="$findings/" -print_final_stats=1 \
        ${FUZZ_FLAGS:-} "$corpus" "$src/corpus/$t" >"$log" 2>&1
    rc=$?
    took=$(($(date +%s) - start))
    set -- $(coverage "$log")
    cov=${1:-?} ft=${2:-?} corp=${3:-?}
    execs=$(stat_of "$log" number_of_executed_units)
    eps=$(stat_of "$log" average_exec_per_sec)
    peak=$(stat_of "$log" peak_rss_mb)
    result=ok
    if [ $rc -ne 0 ]; then
        result="FAILED (exit $rc)"
        failed="$failed $t"
        grep -E '^==[0-9]+==ERROR|^SUMMARY|fuzz invariant failed|runtime error|Test unit written' "$log" | head -n 8
        for f in $(ls "$findings"); do
            grep -qx "$f" "$before" || echo "new input: $findings/$f"
        done
    fi
    printf '%-16s %7s %12s %9s %7s %8s %7s %8s  %s\n' "$t" "$took" "${execs:-?}" "${eps:-?}" "$cov" "$ft" "$corp" \
        "${peak:-?}" "$result" >>"$summary"
    rm -f "$before"
done
echo
cat "$summary"
if [ -n "$failed" ]; then
    echo
    echo "fuzz: failed:$failed. The inputs are in $src/findings/; replay one with"
    echo "  $build/fuzz/fuzz_TARGET FILE"
    echo "and, once fixed, add it to fuzz/regressions/TARGET/ (the test suite replays that folder)."
    exit 1
fi
