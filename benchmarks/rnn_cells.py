"""Why the GRU trains slower than the LSTM here: torch's nn.LSTM against nn.GRU, the laptop
recipes' shapes (2 layers of 256, batch 32 x 64 tokens), forward + backward, in fp32 and under
bf16 autocast, with the operators that take the time (torch.profiler, self CPU time).

    python benchmarks/rnn_cells.py

Prints one line per cell and precision: milliseconds per step (the median of `--repeats`),
tokens per second, and the top operators of one profiled step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn


def step_fn(rnn: nn.Module, x: torch.Tensor, bf16: bool):
    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y, _ = rnn(x)
        y.float().sum().backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}; "
          f"{args.layers} x {args.hidden}, batch {args.batch} x {args.tokens}", flush=True)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.tokens, args.hidden)
    for name, cls in (("lstm", nn.LSTM), ("gru", nn.GRU)):
        for bf16 in (False, True):
            step = step_fn(cls(args.hidden, args.hidden, num_layers=args.layers, batch_first=True), x, bf16)
            for _ in range(3):
                step()  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            ms = 1000 * statistics.median(times)
            with torch.profiler.profile() as prof:
                step()
            top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:5]
            ops = ", ".join(f"{e.key} {e.self_cpu_time_total / 1000:.1f} ms ({e.count}x)" for e in top)
            print(f"{name} {'bf16' if bf16 else 'fp32'}: {ms:.1f} ms per step, "
                  f"{args.batch * args.tokens / ms * 1000:,.0f} tokens/s; top ops: {ops}", flush=True)


if __name__ == "__main__":
    main()
