#!/usr/bin/env bash
# Reproduces docs/results.md: each invocation trains the full baseline and its policies side by side
# from the same initialisation (after an untimed warm-up); JSON lands in runs/results/ and
# bench/results_table.py aggregates it. Run on an otherwise idle machine. Already written results
# are kept, so the script can be resumed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/results
mkdir -p "$out"
run() { local name=$1; shift; [ -s "$out/$name.json" ] || fxdrop run --no-progress --json "$@" > "$out/$name.json"; }
run resnet18_default_s0 --model resnet18 --seed 0 --policy learn-and-drop random position thin stochastic-depth freeze
run resnet18_stop_s0 --model resnet18 --seed 0 --ld stop=0.1 --policy learn-and-drop random position thin
# VGG-11 at 32 px took 7.6x ResNet-18's time per training image here: 4,000 training images
run vgg11_default_s0 --model vgg11 --seed 0 --train-limit 4000 --policy learn-and-drop random
run resnet50_default_s0 --model resnet50 --seed 0 --policy learn-and-drop
for seed in 1 2; do
  run resnet18_default_s$seed --model resnet18 --seed $seed --policy learn-and-drop random position thin stochastic-depth freeze
done
python bench/results_table.py "$out"
