#!/usr/bin/env bash
# Does pretraining help? SST-2 fine-tuning of two pretrained runs (an LSTM and a Transformer),
# each against the same network from scratch, at equal budgets (2 epochs or 500 steps of 32
# sentences, whichever comes first), plus a learning curve at 1% and 10% of the labels.
# Jobs run two at a time, one thread each.
#   LABKIT_DATA=... bash benchmarks/finetune_sst2.sh LSTM_RUN TRANSFORMER_RUN [RUNS_DIR]
# then: python benchmarks/finetune_table.py RUNS_DIR
set -euo pipefail
runs=${3:-runs}
budget="--epochs 2 --max-steps 500 --eval-every 100"
jobs=$(mktemp)
for base in "$1" "$2"; do
  # All 65,349 labelled sentences (SST-2 train less 2,000 held out for validation).
  echo "$base --from-scratch --name $base-sst2-scratch-all-s0" >> "$jobs"
  echo "$base --mode frozen --name $base-sst2-frozen-all-s0" >> "$jobs"
  echo "$base --name $base-sst2-full-all-s0" >> "$jobs"
  # The learning curve: 1% (three seeds: three different subsets) and 10% (two seeds).
  for seed in 0 1 2; do
    echo "$base --from-scratch --train-size 653 --seed $seed --name $base-sst2-scratch-n653-s$seed" >> "$jobs"
    echo "$base --train-size 653 --seed $seed --name $base-sst2-full-n653-s$seed" >> "$jobs"
  done
  for seed in 0 1; do
    echo "$base --from-scratch --train-size 6535 --seed $seed --name $base-sst2-scratch-n6535-s$seed" >> "$jobs"
    echo "$base --train-size 6535 --seed $seed --name $base-sst2-full-n6535-s$seed" >> "$jobs"
  done
done
# Slowest first (the Transformer's full-data runs), so the two workers finish together.
{ grep -- "$2 .*-all-" "$jobs"; grep -v -- "$2 .*-all-" "$jobs"; } |
  OMP_NUM_THREADS=1 xargs -P 2 -L 1 sh -c "labkit finetune \$0 \"\$@\" --runs-dir $runs $budget > /dev/null 2>&1 || echo failed: \$0 \$*"
rm -f "$jobs"
