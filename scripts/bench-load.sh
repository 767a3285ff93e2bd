#!/usr/bin/env bash
# Issue 12, item 2: float32 loading against a warm `cat` of the same file, in one run, interleaved, on each MODEL.
# Each repetition: `cat FILE > /dev/null` (after one warming cat), then `gaugetorch-bench load MODEL float32 map`
# (zero-copy) and `... copy` (every parameter copied, the loader before issue 12), each in a fresh process under
# /usr/bin/time. Prints per run: wall, load_s (open + load), load_and_touch_s (plus reading every parameter page once,
# what a first forward pays on a mapped model), peak RSS, and the ratios to the cat of the same repetition.
# Usage: flock /tmp/gaugetorch-heavy.lock scripts/bench-load.sh MODEL... (REPS=3 by default; BENCH=path to the built
#        gaugetorch-bench.dll, default tools/GaugeTorch.Bench/bin/Release/net10.0/gaugetorch-bench.dll)
set -uo pipefail
reps=${REPS:-3}
bench=${BENCH:-tools/GaugeTorch.Bench/bin/Release/net10.0/gaugetorch-bench.dll}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for model in "$@"; do
  file="$model/model.safetensors"
  bytes=$(stat -c %s "$file")
  cat "$file" > /dev/null
  for r in $(seq 1 "$reps"); do
    t0=$(date +%s.%N); cat "$file" > /dev/null; t1=$(date +%s.%N)
    catwall=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$t0" "$t1")
    line="$(basename "$model") run $r: file $((bytes / 1000000)) MB, warm cat ${catwall} s"
    for loader in map copy; do
      /usr/bin/time -f "%e %M" -o "$tmp/t" dotnet "$bench" load "$model" float32 "$loader" > "$tmp/j" 2> "$tmp/err" || { cat "$tmp/err"; exit 1; }
      read -r wall rss < "$tmp/t"
      j=$(cat "$tmp/j")
      ls=$(json "$j" load_s); lt=$(json "$j" load_and_touch_s)
      line+=$(python3 -c "import sys; c,ls,lt,w,rss,b=map(float,sys.argv[1:7]); print(f'; {sys.argv[7]}: load {ls:.2f} s ({ls/c:.2f}x cat), load+touch {lt:.2f} s ({lt/c:.2f}x cat), process {w:.2f} s, peak RSS {rss/1024:.0f} MB ({rss*1024/b:.2f}x file)')" "$catwall" "$ls" "$lt" "$wall" "$rss" "$bytes" "$loader")
    done
    echo "$line"
  done
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
