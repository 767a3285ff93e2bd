#!/usr/bin/env bash
# Old vs new on the gpt2 preset, interleaved (issue 10 item 1: "GPT-2 keeps every figure it has today"):
# verify-invariance (the eleven families of the old catalog, float64) and transform, each run in a fresh process
# under /usr/bin/time (wall time, peak RSS), alternating OLD and NEW so that machine load hits both alike.
# Usage: OLD=/path/to/old/gaugetorch NEW=/path/to/new/gaugetorch scripts/bench-core.sh [MODEL] [REPS] [TRANSFORMS] [TOKENS]
#   MODEL defaults to /tmp/gpt2p (gaugetorch make-checkpoint --preset gpt2 --out /tmp/gpt2p); outputs go to $WORK.
set -uo pipefail
model=${1:-/tmp/gpt2p}
reps=${2:-2}
n=${3:-2}
tokens=${4:-64}
work=${WORK:-/tmp/gaugetorch-bench-core}
mkdir -p "$work"
families=qk,vo,head-perm,mlp-perm,key-bias,value-bias,ln-gain,ln-bias,reader-mean,writer-mean,embedding-offset
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$reps"); do
  for v in OLD NEW; do
    cli=${!v}
    /usr/bin/time -f "%e %M" -o "$work/$v-verify-$r.time" "$cli" verify-invariance "$model" --families "$families" \
      --transforms "$n" --max-tokens "$tokens" --seed 1 --json "$work/$v-verify-$r.json" > "$work/$v-verify-$r.txt" 2>&1
    read -r wall rss < "$work/$v-verify-$r.time"
    timing=$(python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['timing']; print('forward %.1f s, gauge %.1f s, load %.1f s' % (t['forward_s'], t['gauge_s'], t['load_s']))" "$work/$v-verify-$r.json" 2>/dev/null)
    echo "$v verify-invariance run $r: ${wall} s wall, peak RSS $((rss / 1024)) MB ($timing)"
    rm -rf "$work/$v-transform-$r"
    /usr/bin/time -f "%e %M" -o "$work/$v-transform-$r.time" "$cli" transform "$model" --families "$families" --seed 1 --out "$work/$v-transform-$r" > /dev/null 2>&1
    read -r wall rss < "$work/$v-transform-$r.time"
    echo "$v transform run $r: ${wall} s wall, peak RSS $((rss / 1024)) MB"
  done
done
for r in $(seq 1 "$reps"); do
  cmp -s "$work/OLD-transform-$r/model.safetensors" "$work/NEW-transform-$r/model.safetensors" && echo "transform run $r: model.safetensors identical" || echo "transform run $r: model.safetensors DIFFERS"
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
