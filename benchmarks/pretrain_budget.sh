#!/usr/bin/env bash
# WikiText-2 pretraining within a fixed training-time budget: the classic 2x200 LSTM and the
# Transformer of the same size. By default one after the other, each with every core; with
# SIDE_BY_SIDE=1 both at once, one thread each (half the wall time, the same conditions for both).
#   LABKIT_DATA=... [SIDE_BY_SIDE=1] bash benchmarks/pretrain_budget.sh [BUDGET] [RUNS_DIR]
set -euo pipefail
budget=${1:-15m}
runs=${2:-runs}
presets=(classic-lstm classic-transformer)
if [ "${SIDE_BY_SIDE:-0}" = 1 ]; then
  for preset in "${presets[@]}"; do
    OMP_NUM_THREADS=1 labkit pretrain --preset "$preset" --time-budget "$budget" \
      --name "$preset-$budget" --runs-dir "$runs" --no-progress > "$runs/$preset-$budget.log" 2>&1 &
  done
  wait
else
  for preset in "${presets[@]}"; do
    labkit pretrain --preset "$preset" --time-budget "$budget" --name "$preset-$budget" \
      --runs-dir "$runs" --no-progress
  done
fi
labkit runs --runs-dir "$runs"
