#!/usr/bin/env bash
# Benchmark of `gaugetorch canonicalize-checkpoint` on a LLaMA-family checkpoint (issue 10 item 6): wall time and peak
# RSS against a plain `cp` of the checkpoint file, interleaved (cp, cp && sync, canonicalize --check-tokens 0) ROUNDS
# times because this host's page-cache write speed drifts from minute to minute; then one run with the default
# logits check (two float64 forwards on the built-in text) and a second canonicalization of the export (bytes
# compared); CHECK=0 skips those two.
# Usage: scripts/bench-canonicalize-llama.sh [DTYPE=F32] [ROUNDS=3] [WORKDIR=/tmp/canon-llama-bench-$$] [INPUT=WORKDIR/in]
# Makes the llama-3.2-1b preset (1.24 B parameters, tied) in DTYPE unless INPUT/config.json exists. Needs ~3x the
# checkpoint size of free disk; run it under `flock /tmp/gaugetorch-heavy.lock`. Build Release first:
#   dotnet build -c Release src/GaugeTorch.Cli
set -euo pipefail
DTYPE=${1:-F32}
ROUNDS=${2:-3}
W=${3:-/tmp/canon-llama-bench-$$}
IN=${4:-$W/in}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLI=${CLI:-"dotnet $ROOT/src/GaugeTorch.Cli/bin/Release/net10.0/gaugetorch.dll"}
mkdir -p "$W"
trap 'rm -rf "$W/out" "$W/copy.safetensors"' EXIT
[ -f "$IN/config.json" ] || $CLI make-checkpoint --arch llama --preset llama-3.2-1b --dtype "$DTYPE" --out "$IN" >/dev/null
ls -l "$IN/model.safetensors"
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
  measure cp cp "$IN/model.safetensors" "$W/copy.safetensors"
  rm -f "$W/copy.safetensors"; sync
  measure cp+sync sh -c "cp '$IN/model.safetensors' '$W/copy.safetensors' && sync"
  rm -f "$W/copy.safetensors"; sync
  measure canonicalize-nocheck env GAUGETORCH_PROFILE=1 $CLI canonicalize-checkpoint "$IN" --out "$W/out" --check-tokens 0 --json "$W/report-nocheck.json"
  rm -rf "$W/out"; sync
done
grep -E '^(layer|globals|read|stage|finite|commit|wait|check)' "$W/canonicalize-nocheck.out" || true
if [ "${CHECK:-1}" = 1 ]; then
measure canonicalize env GAUGETORCH_PROFILE=1 $CLI canonicalize-checkpoint "$IN" --out "$W/out" --json "$W/report.json"
grep -E '^(layer|globals|read|stage|finite|commit|wait|check)' "$W/canonicalize.out" || true
grep -E '^  "(tokens|logits_error_storage|logits_error_storage_eps|near_degenerate_singular_values|near_tied_heads|near_tied_groups|near_tied_units|near_tied_signs|kept_layers)"' "$W/report.json"
measure recanonicalize $CLI canonicalize-checkpoint "$W/out" --out "$W/out2" --check-tokens 0 --json "$W/report2.json"
cmp "$W/out/model.safetensors" "$W/out2/model.safetensors" && echo "canonical form of the canonical export: same bytes"
rm -rf "$W/out2"
fi
echo "medians over $ROUNDS rounds:"
for label in cp cp+sync canonicalize-nocheck; do
  grep "^$label " "$RESULTS" | awk '{print $2}' | sort -n | awk -v l="$label" '{a[NR]=$1} END {print "  " l ": " a[int((NR+1)/2)] " s"}'
done
awk '$1=="cp"{cp[++n]=$2} $1=="canonicalize-nocheck"{cn[++m]=$2} END {for (i=1;i<=n;i++) printf "  round %d: canonicalize / cp = %.2f\n", i, cn[i]/cp[i]}' "$RESULTS"
