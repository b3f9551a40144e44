#!/usr/bin/env bash
# Heap allocations and CPU time per call, for each pair of the overhead
# benchmark run alone (SINEW_BENCH_ONLY), counted by the kernel: uprobes on
# glibc's malloc and realloc, and the process's task clock. Counts are
# exact and repeatable whatever else the machine is doing; the CPU time is
# not, but moves far less than requests per second.
#
# Needs Linux perf and the right to add uprobes (root).
#
# Run with: bash benches/allocations.sh [tonic sinew traced-unsampled traced]
set -euo pipefail
cd "$(dirname "$0")/.."

pairs=("$@")
if [ ${#pairs[@]} -eq 0 ]; then
    pairs=(tonic sinew traced-unsampled traced)
fi

libc=$(ldconfig -p | awk '/libc\.so\.6 .*x86-64/ {print $NF; exit}')
for fn in malloc realloc; do
    if ! perf probe -l 2>/dev/null | grep -q "probe_libc:$fn "; then
        perf probe -q -x "$libc" "$fn" >/dev/null
    fi
done

cargo bench --bench overhead --no-run 2>/dev/null
bench=$(cargo bench --bench overhead --no-run 2>&1 | awk '/Executable/ {gsub(/[()]/, "", $NF); print $NF}')

printf '%-18s %10s %14s %14s\n' pair calls allocs/call cpu_us/call
run() {
    SINEW_BENCH_ONLY=$1 SINEW_BENCH_ROUNDS=1 SINEW_BENCH_SECONDS=${SINEW_BENCH_SECONDS:-3} \
        perf stat -x, -e "$2" "$bench" 2>&1
}
for pair in "${pairs[@]}"; do
    # Two runs: the probes trap into the kernel on every allocation, which
    # would inflate the time.
    counted=$(run "$pair" probe_libc:malloc,probe_libc:realloc)
    timed=$(run "$pair" task-clock)
    calls=$(grep -oE '[0-9]+ calls' <<<"$counted" | grep -oE '[0-9]+')
    mallocs=$(grep 'probe_libc:malloc' <<<"$counted" | cut -d, -f1)
    reallocs=$(grep 'probe_libc:realloc' <<<"$counted" | cut -d, -f1)
    timed_calls=$(grep -oE '[0-9]+ calls' <<<"$timed" | grep -oE '[0-9]+')
    ms=$(grep 'task-clock' <<<"$timed" | cut -d, -f1)
    awk -v p="$pair" -v c="$calls" -v m="$mallocs" -v r="$reallocs" -v tc="$timed_calls" -v t="$ms" \
        'BEGIN { printf "%-18s %10d %14.1f %14.1f\n", p, c, (m + r) / c, t * 1000 / tc }'
done
