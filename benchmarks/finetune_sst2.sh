#!/usr/bin/env bash
# Does pretraining help? SST-2 fine-tuning of two pretrained runs (an LSTM and a Transformer),
# each against the same network from scratch, at equal budgets (2 epochs or 1,500 steps of 32
# sentences, whichever comes first), plus a learning curve at 1% and 10% of the labels.
# The two families run side by side, one thread each.
#   LABKIT_DATA=... bash benchmarks/finetune_sst2.sh LSTM_RUN TRANSFORMER_RUN [RUNS_DIR]
# then: python benchmarks/finetune_table.py RUNS_DIR
set -euo pipefail
lstm=$1
transformer=$2
runs=${3:-runs}
budget=(--epochs 2 --max-steps 1500 --eval-every 100)

series() {
  local base=$1
  ft() { OMP_NUM_THREADS=1 labkit finetune "$base" --runs-dir "$runs" "${budget[@]}" "$@"; }
  # All 65,349 labelled sentences (SST-2 train less 2,000 held out for validation).
  ft --from-scratch --name "$base-sst2-scratch-all-s0"
  ft --mode frozen --name "$base-sst2-frozen-all-s0"
  ft --name "$base-sst2-full-all-s0"
  # The learning curve: 1% and 10% of the labels, three seeds (three different subsets) each.
  for n in 653 6535; do
    for seed in 0 1 2; do
      ft --from-scratch --train-size "$n" --seed "$seed" --name "$base-sst2-scratch-n$n-s$seed"
      ft --train-size "$n" --seed "$seed" --name "$base-sst2-full-n$n-s$seed"
    done
  done
}
series "$lstm" > "$runs/finetune-$lstm.log" 2>&1 &
series "$transformer" > "$runs/finetune-$transformer.log" 2>&1 &
wait
