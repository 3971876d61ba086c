#!/usr/bin/env bash
# Reproduces docs/results.md: each invocation trains the full baseline and its policies side by side
# from the same initialisation; JSON lands in runs/results/, bench/results_table.py aggregates it.
# Usage: bash bench/run_results.sh            (run on an otherwise idle machine: timings are ratios
#                                              of runs in one process, but other load skews them)
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/results
mkdir -p "$out"
run() { local name=$1; shift; [ -s "$out/$name.json" ] || fxdrop run --no-progress --json "$@" > "$out/$name.json"; }
run resnet18_default_s0 --model resnet18 --seed 0 --policy learn-and-drop random position thin stochastic-depth freeze
run resnet18_stop_s0 --model resnet18 --seed 0 --ld stop=0.1 --policy learn-and-drop random position thin
run vgg11_default_s0 --model vgg11 --seed 0 --policy learn-and-drop random position thin freeze
run resnet50_default_s0 --model resnet50 --seed 0 --policy learn-and-drop
run vgg16_default_s0 --model vgg16 --seed 0 --policy learn-and-drop
for seed in 1 2; do
  run resnet18_default_s$seed --model resnet18 --seed $seed --policy learn-and-drop random position thin stochastic-depth freeze
  run resnet18_stop_s$seed --model resnet18 --seed $seed --ld stop=0.1 --policy learn-and-drop random position thin
done
python bench/results_table.py "$out"
