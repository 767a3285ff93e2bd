#!/usr/bin/env bash
# The measured barriers of docs/merging.md: trains pairs of small GPT-2 models on the demo text (The Devil's
# Dictionary) and measures the loss barrier between them four ways with `gaugetorch interpolate`.
#   tools/merging-recipe.sh train   DIR   # seed pair (s1, s2) and a base with two fine-tunes (ft1, ft2), F32
#   tools/merging-recipe.sh measure DIR   # interpolate: naive, permutations only, full, --untie (JSON in DIR)
#   tools/merging-recipe.sh train-llama DIR / measure-llama DIR   # the same for a LLaMA-family pair (seeds 1, 2)
# Run from the repository root after `dotnet build GaugeTorch.sln -c Release`. About 15 min of training on 2 cores.
set -euo pipefail
stage=${1:?train or measure}; dir=${2:?output directory}
mkdir -p "$dir"
train() { dotnet tools/GaugeTorch.TrainDemo/bin/Release/net*/GaugeTorch.TrainDemo.dll --layers 2 --embd 64 --heads 4 --ctx 64 --batch 8 --dtype f32 "$@"; }
gt() { dotnet src/GaugeTorch.Cli/bin/Release/net*/gaugetorch.dll "$@"; }
text=tools/GaugeTorch.TrainDemo/data/devils-dictionary.txt
if [ "$stage" = train ]; then
  train --out "$dir/s1" --seed 1 --steps 250 --minutes 8
  train --out "$dir/s2" --seed 2 --steps 250 --minutes 8
  train --out "$dir/base" --seed 3 --steps 150 --minutes 6
  train --out "$dir/ft1" --init "$dir/base" --seed 3 --data-seed 11 --steps 100 --minutes 4 --lr 1e-3
  train --out "$dir/ft2" --init "$dir/base" --seed 3 --data-seed 12 --steps 100 --minutes 4 --lr 1e-3
elif [ "$stage" = train-llama ]; then
  train --arch llama --out "$dir/l1" --seed 1 --steps 100 --minutes 4
  train --arch llama --out "$dir/l2" --seed 2 --steps 100 --minutes 4
elif [ "$stage" = measure-llama ]; then
  tok=$(cat "$dir/l1/heldout-tokens.txt")
  gt interpolate "$dir/l1" "$dir/l2" --tokens "$tok" --steps 10 --json "$dir/l1-l2.json" --plot "$dir/l1-l2.svg"
  gt interpolate "$dir/l1" "$dir/l2" --tokens "$tok" --steps 10 --permutations-only --json "$dir/l1-l2-perm.json"
  gt interpolate "$dir/l1" "$dir/l2" --tokens "$tok" --steps 10 --untie --json "$dir/l1-l2-untie.json"
else
  # Held-out text: the last 5 % of the tokens are never trained on; take the last 6,000 characters (about 1,500 tokens).
  tail -c 6000 "$text" > "$dir/heldout.txt"
  for pair in "s1 s2" "ft1 ft2"; do
    set -- $pair; name="$1-$2"
    gt interpolate "$dir/$1" "$dir/$2" --text-file "$dir/heldout.txt" --steps 10 --json "$dir/$name.json" --plot "$dir/$name.svg"
    gt interpolate "$dir/$1" "$dir/$2" --text-file "$dir/heldout.txt" --steps 10 --permutations-only --json "$dir/$name-perm.json"
    gt interpolate "$dir/$1" "$dir/$2" --text-file "$dir/heldout.txt" --steps 10 --untie --json "$dir/$name-untie.json"
  done
fi
