#!/usr/bin/env bash
# The GPU check: `labkit bench` at the medium presets (the fp32 reference, labkit's bf16 path and
# torch.compile), short pretrainings in bf16 and in fp16 with its gradient scaler, notebooks 04 and
# 05 in the gpu profile cut to 1% of their training, and data-parallel training in two processes
# when there are two GPUs. Each step stops at its own time limit and the whole at 9 minutes; the
# results go to one JSON file. benchmarks/gpu_check.py does the work (see --help, and
# docs/benchmarks.md, "GPU").
#
#   LABKIT_DATA=... bash benchmarks/gpu.sh [--out FILE] [--budget TIME] [--target-ppl PPL] [--limit SECONDS]
#                                         [--size medium|classic|tiny] [--device DEV] [--dry-run] [--help]
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "$0")/gpu_check.py" "$@"
