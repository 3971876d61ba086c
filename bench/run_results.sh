#!/usr/bin/env bash
# Reproduces docs/results.md: every row's JSON lands in runs/results/, then bench/results_table.py
# aggregates them. Usage: bash bench/run_results.sh [seeds...]   (default seeds: 0 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/results
mkdir -p "$out"
seeds=("${@:-0 1 2}")
for seed in ${seeds[@]}; do
  fxdrop run --model resnet18 --epochs 3 --seed "$seed" --no-progress --json \
    --policy learn-and-drop random position thin stochastic-depth freeze > "$out/resnet18_s$seed.json"
  fxdrop run --model vgg11 --epochs 3 --seed "$seed" --no-progress --json \
    --policy learn-and-drop random position thin freeze > "$out/vgg11_s$seed.json"
done
for seed in ${seeds[@]}; do
  fxdrop run --model resnet50 --epochs 3 --seed "$seed" --no-progress --json --policy learn-and-drop > "$out/resnet50_s$seed.json"
  fxdrop run --model vgg16 --epochs 3 --seed "$seed" --no-progress --json --policy learn-and-drop > "$out/vgg16_s$seed.json"
done
python bench/results_table.py "$out"
