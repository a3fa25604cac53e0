#!/usr/bin/env bash
# Chaos runs: `memwal chaos` once per seed, reports kept, one summary line per run.
#
#   scripts/chaos.sh [--minutes N | --seconds N] [--seed S]... [any other `memwal chaos` option]
#
#   --minutes N     length of each run's fault schedule (default 3); --seconds for shorter ones
#   --seed S        a run with this seed; repeat for several runs; default: one random seed
#   anything else   passed to every `memwal chaos` run (--faults LIST, --clients N, --rate N, ...)
#
# Each run writes its JSON report to $MEMWAL_CHAOS_DIR (default .memwal-chaos/) as
# report-SEED.json; a failed run keeps its run directory (logs, data) and prints the command that
# reruns it. Exits non-zero if any run failed. The binary is $MEMWAL_BINARY (default
# .build/release/memwal, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

binary="${MEMWAL_BINARY:-.build/release/memwal}"
out="${MEMWAL_CHAOS_DIR:-.memwal-chaos}"
length=(--minutes 3)
seeds=()
passthrough=()
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) length=(--minutes "${2:?--minutes needs a value}"); shift 2 ;;
    --seconds) length=(--seconds "${2:?--seconds needs a value}"); shift 2 ;;
    --seed) seeds+=("${2:?--seed needs a value}"); shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) passthrough+=("$1"); shift ;;
  esac
done
if [ ${#seeds[@]} -eq 0 ]; then seeds=("$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"); fi

if [ ! -x "$binary" ]; then
  echo "building $binary (swift build -c release)..." >&2
  swift build -c release >&2
fi
mkdir -p "$out"

status=0
summaries=()
for seed in "${seeds[@]}"; do
  report="$out/report-$seed.json"
  line="$("$binary" chaos --seed "$seed" "${length[@]}" --report "$report" --dir "${TMPDIR:-/tmp}" \
    ${passthrough[@]+"${passthrough[@]}"} | tail -n 2)" || status=1
  echo "$line"
  summaries+=("$(head -n 1 <<<"$line")")
done
echo "== ${#seeds[@]} chaos run(s):"
printf '%s\n' "${summaries[@]}"
exit "$status"
