#!/usr/bin/env bash
# Issue 12, item 1: verify-invariance with defaults (float64, 4 elements per group, the built-in text) on MODEL, OLD and
# NEW interleaved, each in a fresh process under /usr/bin/time -v, stderr redirected (so the progress lines land in
# the log); then, in the same run, gaugetorch-bench block (the block forward's flop rate against plain float64
# matmuls of the same shapes, and gauge work per family against the forward on one layer).
# Usage: OLD=old/gaugetorch.dll NEW=new/gaugetorch.dll BENCH=gaugetorch-bench.dll [REPS=1] [SKIP_OLD=1] \
#        flock /tmp/gaugetorch-heavy.lock scripts/bench-verify-xl.sh MODEL
set -uo pipefail
model=$1
reps=${REPS:-1}
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg); outputs in $work"
versions="OLD NEW"; [ "${SKIP_OLD:-0}" = 1 ] && versions=NEW
for r in $(seq 1 "$reps"); do
  for v in $versions; do
    dll=${!v}
    /usr/bin/time -v dotnet "$dll" verify-invariance "$model" --json "$work/$v-$r.json" > "$work/$v-$r.txt" 2> "$work/$v-$r.err"
    rc=$?
    rss=$(grep "Maximum resident" "$work/$v-$r.err" | awk '{print $NF}')
    wall=$(grep "Elapsed (wall" "$work/$v-$r.err" | awk '{print $NF}')
    lines=$(grep -c "transformed copies" "$work/$v-$r.err")
    python3 - "$work/$v-$r.json" "$v" "$r" "$rc" "$wall" "$rss" "$lines" <<'PY'
import json, sys
path, v, r, rc, wall, rss, lines = sys.argv[1:]
try:
    t = json.load(open(path))['timing']
    print(f"{v} run {r}: exit {rc}, wall {wall}, peak RSS {int(rss)/1048576:.2f} GB; forwards {t['forward_s']:.1f} s, gauge {t['gauge_s']:.1f} s, "
          f"gauge/forwards {t['gauge_s']/t['forward_s']:.3f}, loading {t['load_s']:.1f} s, total {t['total_s']:.1f} s; {lines} progress lines on stderr")
except Exception as e:
    print(f"{v} run {r}: exit {rc}, wall {wall}, peak RSS {rss} KB, no timing ({e})")
PY
    tail -1 "$work/$v-$r.txt"
  done
done
dotnet "$BENCH" block "$model" 83 3 > "$work/block.json"
python3 - "$work/block.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"block probe (layer {d['layer']}, 83 tokens, float64, {d['threads']} threads): block forward {d['block_forward_ms']:.1f} ms = {d['block_gflops']:.1f} GFLOP/s; "
      f"plain matmuls of the same shapes {d['plain_matmuls_ms']:.1f} ms = {d['plain_matmul_gflops']:.1f} GFLOP/s; forward/matmul rate {d['forward_over_matmul_rate']:.2f}")
for g in d['groups']:
    print(f"  {g['group']:28s} sample {g['sample_ms']:8.1f} ms  apply {g['apply_ms']:8.1f} ms  forward {g['forward_ms']:8.1f} ms  gauge/forward {g['gauge_over_forward']:.2f}")
PY
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
