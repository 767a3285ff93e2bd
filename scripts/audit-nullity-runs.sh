#!/usr/bin/env bash
# The nullity runs of docs/audit.md: `gaugetorch audit --nullity` on GAUGE.md's eight shapes, on shapes the tool was
# not tuned to, and on the degenerate shapes where the nullity exceeds the formula. Prints one markdown table row per
# run (shape, parameters, outputs, nullity, formula, gap, smallest kept / largest dropped σ, wall time, load).
# Usage: scripts/audit-nullity-runs.sh [WORKDIR=/tmp/audit-nullity-$$]. Build Release first:
#   dotnet build -c Release src/GaugeTorch.Cli
set -uo pipefail
W=${1:-/tmp/audit-nullity-$$}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLI="$ROOT/src/GaugeTorch.Cli/bin/Release/net10.0/gaugetorch"
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
echo "| shape | p | m | nullity | formula | gap | σ kept / dropped | exit | time | load |"
echo "|---|---|---|---|---|---|---|---|---|---|"
run() { # label, options...
  local label=$1; shift
  local t0 t1 rc
  t0=$(date +%s.%N)
  "$CLI" audit --nullity "$@" --json "$W/n.json" > "$W/out.txt" 2> "$W/err.txt"
  rc=$?
  t1=$(date +%s.%N)
  if [ ! -s "$W/n.json" ]; then echo "| $label | error: $(head -1 "$W/err.txt") |"; return; fi
  python3 - "$W/n.json" "$label" "$rc" "$(echo "$t1 - $t0" | bc)" "$(cut -d' ' -f1 /proc/loadavg)" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {o['params']:,} | {o['outputs']:,} | {o['nullity']:,} | {o['formula']:,} | {o['gap']:.1e} | "
      f"{o['smallest_kept']:.1e} / {o['largest_dropped']:.1e} | {sys.argv[3]} | {float(sys.argv[4]):.1f} s | {sys.argv[5]} |")
EOF
  rm -f "$W/n.json"
}
# GAUGE.md §2 / §2b and §6.2.
run "gpt2 L=1 d=8 h=2 F=32 V=11 P=6 tied" --layers 1 --embd 8 --heads 2 --inner 32 --vocab 11 --positions 6
run "gpt2 L=1 d=8 h=2 F=32 V=11 P=6 untied" --layers 1 --embd 8 --heads 2 --inner 32 --vocab 11 --positions 6 --untied
run "gpt2 L=2 d=12 h=3 F=20 V=13 P=5 tied (default)"
run "gpt2 L=2 d=12 h=3 F=20 V=13 P=5 untied" --untied
run "llama L=1 d=8 H=4 G=2 hd=2 F=12 V=11 T=5 tied" --arch llama --layers 1 --head-dim 2 --vocab 11
run "llama L=1 d=8 H=4 G=2 hd=2 F=12 V=11 T=5 untied" --arch llama --layers 1 --head-dim 2 --vocab 11 --untied
run "qwen2 L=2 d=8 H=4 G=2 hd=4 F=12 V=13 T=5 tied (default shape)" --arch qwen2
run "qwen2 L=2 d=8 H=4 G=2 hd=4 F=12 V=13 T=5 untied" --arch qwen2 --untied
# Not tuned to (the test suite's shapes).
run "gpt2 L=1 d=6 h=3 F=10 V=9 P=4 tied" --layers 1 --embd 6 --heads 3 --inner 10 --vocab 9 --positions 4
run "gpt2 L=3 d=4 h=2 F=8 V=7 P=5 untied" --layers 3 --embd 4 --heads 2 --inner 8 --vocab 7 --positions 5 --untied
run "gpt2 L=1 d=10 h=5 F=7 V=13 P=4 untied (F < d)" --layers 1 --embd 10 --heads 5 --inner 7 --vocab 13 --positions 4 --untied
run "llama L=1 d=8 H=4 G=1 hd=2 F=10 V=11 T=5 tied (MQA)" --arch llama --layers 1 --kv-heads 1 --head-dim 2 --inner 10 --vocab 11
run "mistral L=1 d=6 H=2 G=1 hd=4 F=9 V=9 T=5 untied (MQA, hd ≠ d/H)" --arch mistral --layers 1 --embd 6 --heads 2 --kv-heads 1 --head-dim 4 --inner 9 --vocab 9 --untied
run "qwen2 L=1 d=10 H=2 G=1 hd=6 F=12 V=13 T=5 untied (hd ≠ d/H)" --arch qwen2 --layers 1 --embd 10 --heads 2 --kv-heads 1 --head-dim 6 --inner 12 --vocab 13 --untied
run "llama L=3 d=6 H=3 G=1 hd=2 F=7 V=9 T=5 untied" --arch llama --layers 3 --embd 6 --heads 3 --kv-heads 1 --head-dim 2 --inner 7 --vocab 9 --untied
run "llama L=2 d=6 H=3 G=3 hd=2 F=5 V=9 T=6 tied (MHA, F < d)" --arch llama --layers 2 --embd 6 --heads 3 --kv-heads 3 --head-dim 2 --inner 5 --vocab 9 --positions 6
run "gpt2 L=3 d=8 h=4 F=24 V=17 P=8 untied" --layers 3 --embd 8 --heads 4 --inner 24 --vocab 17 --positions 8 --untied
run "llama L=2 d=16 H=8 G=2 hd=2 F=20 V=19 T=6 untied" --arch llama --layers 2 --embd 16 --heads 8 --kv-heads 2 --head-dim 2 --inner 20 --vocab 19 --positions 6 --untied
# Degenerate shapes: the nullity exceeds the formula (exit 1), see docs/audit.md.
run "qwen2 L=1 d=8 H=4 G=4 hd=4 F=12 V=11 T=5 untied (G·hd = 16 > d)" --arch qwen2 --layers 1 --kv-heads 4 --vocab 11 --untied
run "gpt2 L=1 d=8 h=2 F=32 V=8 P=6 tied (V = d)" --layers 1 --embd 8 --heads 2 --inner 32 --vocab 8 --positions 6
run "llama L=1 d=8 H=4 G=2 hd=2 F=12 V=8 T=5 tied (V = d)" --arch llama --layers 1 --head-dim 2 --vocab 8
# Too little data raises the nullity (exit 1, nothing certified), sometimes with an unclear gap; more sequences fix it.
run "gpt2 L=3 d=4 h=2 F=8 V=7 P=3 untied, 66 sequences (2× outputs)" --layers 3 --embd 4 --heads 2 --inner 8 --vocab 7 --positions 3 --untied --sequences 66
run "gpt2 L=3 d=4 h=2 F=8 V=7 P=3 untied, default (4× outputs)" --layers 3 --embd 4 --heads 2 --inner 8 --vocab 7 --positions 3 --untied
run "gpt2 L=1 d=8 h=2 F=32 V=11 P=2 tied, 100 sequences (2×)" --layers 1 --embd 8 --heads 2 --inner 32 --vocab 11 --positions 2 --sequences 100
run "gpt2 L=1 d=8 h=2 F=32 V=11 P=2 tied, default (4×)" --layers 1 --embd 8 --heads 2 --inner 32 --vocab 11 --positions 2
