#!/usr/bin/env bash
# Benchmark of `gaugetorch canonicalize-checkpoint` (issue 4): wall time and peak RSS against a plain `cp` of the
# checkpoint file, interleaved (cp, cp && sync, canonicalize) ROUNDS times because this host's page-cache write
# speed drifts by 2-3x from minute to minute; then one run with the default logits check and one of the paper form.
# Usage: scripts/bench-canonicalize.sh [PRESET=gpt2-xl] [DTYPE=F32] [ROUNDS=3] [WORKDIR=/tmp/canon-bench-$$]
# Needs ~3x the checkpoint size of free disk; run it under `flock /tmp/gaugetorch-heavy.lock`. Build Release first:
#   dotnet build -c Release src/GaugeTorch.Cli
set -euo pipefail
PRESET=${1:-gpt2-xl}
DTYPE=${2:-F32}
ROUNDS=${3:-3}
W=${4:-/tmp/canon-bench-$$}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLI="dotnet $ROOT/src/GaugeTorch.Cli/bin/Release/net10.0/gaugetorch.dll"
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
[ -f "$W/in/config.json" ] || $CLI make-checkpoint --preset "$PRESET" --dtype "$DTYPE" --out "$W/in" >/dev/null
ls -l "$W/in/model.safetensors"
RESULTS="$W/results.txt"
: > "$RESULTS"
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$W/time.txt" "$@" > "$W/$label.out" 2>&1
  read -r secs kb usr sys < "$W/time.txt"
  echo "$label: wall ${secs} s (cpu user ${usr} s, sys ${sys} s), peak RSS $((kb / 1024)) MiB, load $(cut -d' ' -f1 /proc/loadavg)"
  echo "$label $secs" >> "$RESULTS"
}
for r in $(seq "$ROUNDS"); do
  sync
  measure cp cp "$W/in/model.safetensors" "$W/copy.safetensors"
  rm -f "$W/copy.safetensors"; sync
  measure cp+sync sh -c "cp '$W/in/model.safetensors' '$W/copy.safetensors' && sync"
  rm -f "$W/copy.safetensors"; sync
  measure canonicalize-nocheck $CLI canonicalize-checkpoint "$W/in" --out "$W/out" --check-tokens 0 --json "$W/report-nocheck.json"
  rm -rf "$W/out"; sync
done
measure canonicalize $CLI canonicalize-checkpoint "$W/in" --out "$W/out" --json "$W/report.json"
grep -E '^  "(logits_error_storage|logits_error_storage_eps|near_degenerate_singular_values|near_tied_heads|near_tied_units|zeroed_singular_values|householder_fallbacks)"' "$W/report.json"
rm -rf "$W/out"; sync
measure paper $CLI canonicalize-checkpoint "$W/in" --out "$W/out" --form paper --check-tokens 0
rm -rf "$W/out"
echo "medians over $ROUNDS rounds:"
for label in cp cp+sync canonicalize-nocheck; do
  grep "^$label " "$RESULTS" | awk '{print $2}' | sort -n | awk -v l="$label" '{a[NR]=$1} END {print "  " l ": " a[int((NR+1)/2)] " s"}'
done
awk '$1=="cp"{cp[++n]=$2} $1=="canonicalize-nocheck"{cn[++m]=$2} END {for (i=1;i<=n;i++) printf "  round %d: canonicalize / cp = %.2f\n", i, cn[i]/cp[i]}' "$RESULTS"
