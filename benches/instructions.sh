#!/usr/bin/env bash
# Instructions per call for each pair of the overhead benchmark run alone
# (SINEW_BENCH_ONLY), counted by valgrind's callgrind. Under valgrind the
# threads take turns, so contention is not measured, and the count moves
# far less than requests per second do (which move by ten percent from one
# run to the next): the measure to compare a change by. It still moves by
# up to about 1.5% between runs (how calls interleave differs), so compare
# pairs measured in the same run, and changes smaller than that by
# several runs.
#
# Each pair runs twice, for 2s and for 6s of (slowed) calls; the
# difference divided by the difference in calls leaves out the setup.
#
# Run with: bash benches/instructions.sh [tonic sinew traced-unsampled traced]
# (any pair the bench knows: also traced-unexported, sinew-server, sinew-client,
# and the TLS pairs tonic-tls and sinew-tls)
set -euo pipefail
cd "$(dirname "$0")/.."

pairs=("$@")
if [ ${#pairs[@]} -eq 0 ]; then
    pairs=(tonic sinew traced-unsampled traced)
fi
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }

# SINEW_BENCH=gateway counts the gateway benchmark's sides instead
# (direct, forward, json).
bench=$(cargo bench --bench "${SINEW_BENCH:-overhead}" --no-run 2>&1 | awk '/Executable/ {gsub(/[()]/, "", $NF); print $NF}')

count() {
    SINEW_BENCH_ONLY=$1 SINEW_BENCH_ROUNDS=1 SINEW_BENCH_SECONDS=$2 \
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bench" 2>&1 |
        awk '/ calls,/ { for (i = 1; i <= NF; i++) if ($(i) == "calls,") c = $(i - 1) }
             /Collected/ { n = $NF }
             END { print c, n }'
}

printf '%-18s %16s\n' pair instructions/call
for pair in "${pairs[@]}"; do
    read -r calls1 instr1 < <(count "$pair" 2)
    read -r calls2 instr2 < <(count "$pair" 6)
    awk -v p="$pair" -v c1="$calls1" -v i1="$instr1" -v c2="$calls2" -v i2="$instr2" \
        'BEGIN { printf "%-18s %16.0f\n", p, (i2 - i1) / (c2 - c1) }'
done
