#!/usr/bin/env bash
# The GPU benchmark: `labkit bench` at the medium presets on CUDA, bf16, with and without
# torch.compile, against the plain fp32 reference. Reports tokens/s, model FLOP/s against the
# GPU's measured bf16 matrix-multiply peak, and the training time each variant needs to reach
# validation perplexity 150 on WikiText-2. About 7 minutes on one GPU; stopped at 8.
#
#   LABKIT_DATA=... bash benchmarks/gpu.sh [--out FILE] [--budget TIME] [--target-ppl PPL]
#                                         [--size medium|classic|tiny] [--device DEV] [--dry-run]
set -euo pipefail

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'TEXT'
options:
  --out FILE        where the JSON goes (default: runs/bench-gpu.json)
  --budget TIME     training time per variant for the perplexity comparison (default: 45s)
  --target-ppl PPL  the validation perplexity to time (default: 150)
  --size SIZE       medium (default), classic or tiny
  --device DEV      cuda (default), cuda:N; cpu only to check this script (tiny sizes)
  --limit SECONDS   stop the whole run after this long (default: 480)
  --dry-run         print the command instead of running it
  -h, --help        this text
TEXT
}

out=runs/bench-gpu.json budget=45s target=150 size=medium device=cuda limit=480 dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) dry=1; shift ;;
    --out|--budget|--target-ppl|--size|--device|--limit)
      if [ $# -lt 2 ] || [ -z "$2" ]; then echo "gpu.sh: $1 needs a value (see --help)" >&2; exit 2; fi
      case "$1" in
        --out) out=$2 ;; --budget) budget=$2 ;; --target-ppl) target=$2 ;;
        --size) size=$2 ;; --device) device=$2 ;; --limit) limit=$2 ;;
      esac
      shift 2 ;;
    *) echo "gpu.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$size" in medium|classic|tiny) ;; *) echo "gpu.sh: --size must be medium, classic or tiny, not '$size'" >&2; exit 2 ;; esac
case "$limit" in ''|*[!0-9]*) echo "gpu.sh: --limit must be whole seconds, not '$limit'" >&2; exit 2 ;; esac
if [ "$device" = cpu ] && [ "$size" != tiny ]; then
  echo "gpu.sh: --device cpu is for checking this script at --size tiny; use 'labkit bench' on CPUs" >&2; exit 2
fi

cmd=(labkit bench --size "$size" --device "$device" --variants reference,default,compile
     --budget-variants default,compile --budget "$budget" --target-ppl "$target" --windows 5
     --gen-tokens 512 --out "$out")
if [ "$size" = tiny ]; then cmd+=(--eval-tokens 2000 --window 0.5 --windows 2 --evals 3 --gen-tokens 16); fi

if [ "$dry" = 1 ]; then printf '%q ' timeout "$limit" "${cmd[@]}"; echo; exit 0; fi
if [ "$device" != cpu ] && ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu.sh: torch sees no CUDA GPU here; run this on a GPU machine (labkit bench measures CPUs)" >&2
  exit 3
fi
timeout "$limit" "${cmd[@]}"
