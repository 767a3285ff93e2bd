#!/usr/bin/env bash
# verify-invariance at real GPT-2 shapes (issue 3): gpt2 preset in float64 and float32, gpt2-xl preset in float64,
# 64 tokens, with peak RSS (/usr/bin/time) and the gauge-work share of the time (from --json "timing").
# Usage: scripts/bench-invariance.sh [WORKDIR] [TRANSFORMS]   (default /tmp/gaugetorch-bench, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/gaugetorch-bench}
n=${2:-2}
mkdir -p "$work" # gaugetorch does not create missing parent directories
dotnet build -c Release -v q -nologo src/GaugeTorch.Cli >/dev/null
cli="dotnet src/GaugeTorch.Cli/bin/Release/net10.0/gaugetorch.dll"
for preset in gpt2 gpt2-xl; do
  [ -f "$work/$preset-f32/model.safetensors" ] || $cli make-checkpoint --preset $preset --dtype F32 --seed 1 --out "$work/$preset-f32"
done
run() { # name model dtype
  /usr/bin/time -f "%e s wall, peak RSS %M KB" -o "$work/$1.time" \
    $cli verify-invariance "$2" --dtype "$3" --max-tokens 64 --transforms "$n" --seed 1 --json "$work/$1.json" --plot "$work/$1.svg" > "$work/$1.txt" || true
  cat "$work/$1.txt" "$work/$1.time"
}
run gpt2-float64 "$work/gpt2-f32" float64
run gpt2-float32 "$work/gpt2-f32" float32
run gpt2-xl-float64 "$work/gpt2-xl-f32" float64
