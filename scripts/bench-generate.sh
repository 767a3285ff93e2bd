#!/usr/bin/env bash
# Benchmark of `gaugetorch generate` (issue 11, item 3): greedy generation to the full 1,024-position context of the
# gpt2 preset (124M parameters, random weights, F32), with the key/value cache.
#   1. The CLI under /usr/bin/time: peak RSS of a run to the full context, of a 1-token run (model + runtime) and the
#      file size of the weights; goal: peak RSS within 1 GB beyond the model's own size.
#   2. gaugetorch-bench generate (the same Gpt2Model.GenerateGreedy, timed inside the process): the time of every token
#      by position; goal: per-token time does not grow with position beyond the attention cost.
#   3. For contrast, the cost per token before the cache: one full forward over 256 and over 1,024 positions.
# Usage: scripts/bench-generate.sh [WORKDIR=/tmp/gaugetorch-bench-gen]   (run under flock /tmp/gaugetorch-heavy.lock)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/gaugetorch-bench-gen}
mkdir -p "$work"
dotnet build -c Release -v q -nologo src/GaugeTorch.Cli >/dev/null
dotnet build -c Release -v q -nologo tools/GaugeTorch.Bench >/dev/null
cli="dotnet src/GaugeTorch.Cli/bin/Release/net10.0/gaugetorch.dll"
bench="dotnet tools/GaugeTorch.Bench/bin/Release/net10.0/gaugetorch-bench.dll"
model="$work/gpt2-f32"
[ -f "$model/model.safetensors" ] || $cli make-checkpoint --preset gpt2 --seed 1 --out "$model" >&2
bytes=$(stat -c %s "$model/model.safetensors")

# 1. Peak RSS of the CLI. Prompt: one token (464, "The"), so 1,023 new tokens fill the 1,024 positions.
/usr/bin/time -f "%e %M" -o "$work/one.time" $cli generate "$model" --tokens 464 --max-new-tokens 1 > /dev/null
/usr/bin/time -f "%e %M" -o "$work/full.time" $cli generate "$model" --tokens 464 --max-new-tokens 2000 > "$work/full.txt" 2> "$work/full.err"
read -r one_s one_kb < "$work/one.time"
read -r full_s full_kb < "$work/full.time"
echo "weights: $bytes bytes"
echo "CLI, 1 new token:      ${one_s} s, peak RSS $((one_kb / 1024)) MiB"
echo "CLI, full context:     ${full_s} s, peak RSS $((full_kb / 1024)) MiB; beyond the weights: $(( (full_kb * 1024 - bytes) / 1048576 )) MiB; beyond the 1-token run: $(( (full_kb - one_kb) / 1024 )) MiB"
echo "CLI stderr: $(cat "$work/full.err")"
# A 1,000-token prompt (prefilled at once: attention scores [12, 1000, 1000] per layer), then to the context.
long=$(seq 1000 | awk '{ printf "%s%d", (NR > 1 ? "," : ""), ($1 * 7919) % 50257 }')
/usr/bin/time -f "%e %M" -o "$work/long.time" $cli generate "$model" --tokens "$long" --max-new-tokens 100 > /dev/null 2> "$work/long.err"
read -r long_s long_kb < "$work/long.time"
echo "CLI, 1,000-token prompt + 24 new: ${long_s} s, peak RSS $((long_kb / 1024)) MiB; beyond the weights: $(( (long_kb * 1024 - bytes) / 1048576 )) MiB"

# 2. Per-token time by position.
$bench generate "$model" float32 1 40 > "$work/tokens.json"
jq -r '"in-process: \(.generated) tokens in \(.total_s|.*10|round/10) s; first (prefill) \(.first_token_ms|round) ms; positions 1-64: \(.early_mean_ms*10|round/10) ms/token, last 64: \(.late_mean_ms*10|round/10) ms/token (ratio \((.late_mean_ms/.early_mean_ms)*100|round/100)); attention share of the flops at the last position: \(.attention_share_at_end*1000|round/10) %"' "$work/tokens.json"
jq -r '.buckets[] | "  positions \(.first_position)-\(.last_position): \(.mean_ms*10|round/10) ms/token"' "$work/tokens.json"
jq -r '"interleaved (\(.interleaved_pairs) pairs): a step at position 1 \(.step_at_position_1_median_ms|round) ms, at position \(.positions - 1) \(.step_at_last_position_median_ms|round) ms (medians); ratio last/first median \(.last_over_first_ratio_median*100|round/100), range \(.last_over_first_ratio_min*100|round/100)-\(.last_over_first_ratio_max*100|round/100)"' "$work/tokens.json"
jq -r '"VmHWM in-process: before load \(.vm_hwm_before_load_bytes/1048576|round) MiB, after load \(.vm_hwm_after_load_bytes/1048576|round) MiB, after generating \(.vm_hwm_bytes/1048576|round) MiB"' "$work/tokens.json"

# 3. Before the cache, each token cost a forward over the whole sequence.
for t in 256 1024; do
  $bench forward "$model" float32 $t 1 | jq -r '"full forward over \(.tokens) positions (what one token cost before the cache): \(.best_s*1000|round) ms"'
done
