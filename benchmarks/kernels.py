"""The single levers behind `labkit bench`, each timed alone at the classic sizes (milliseconds
per call, median of several, CPU time of this one thread so that other jobs on the machine
disturb it less):

    OMP_NUM_THREADS=1 python benchmarks/kernels.py [--json FILE]

- the output layer and loss for one LSTM step (700 positions x 200 -> 33,278 words), forward
  and backward: torch's cross-entropy on full logits in fp32 and in bf16, and labkit's chunked
  loss in both;
- one AdamW step on the Transformer's 14M parameters: per-tensor loop against fused;
- a dropout mask for one layer's attention weights (3 x 4 x 256 x 256): bernoulli_ against
  labkit's uniform-and-compare;
- one decoding step of the Transformer's output layer (256 -> 33,278): torch's weight layout
  against the transposed copy labkit keeps;
- the square matrix-multiply peak in fp32 and bf16 (as `labkit bench` measures it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from labkit.device import matmul_peak
from labkit.models.fast import dropout, transposed_weight
from labkit.models.loss import linear_cross_entropy


def cpu_ms(fn: Callable[[], object], repeats: int = 9) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1000 * statistics.median(times)


def loss_levers() -> dict[str, float]:
    torch.manual_seed(0)
    N, D, V = 700, 200, 33_278
    h = torch.randn(N, D, requires_grad=True)
    w = (torch.randn(V, D) * 0.1).requires_grad_()
    b = torch.zeros(V, requires_grad=True)
    y = torch.randint(V, (N,))

    def step(loss_fn: Callable[[], torch.Tensor], bf16: bool) -> Callable[[], None]:
        def run() -> None:
            for t in (h, w, b):
                t.grad = None
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn()
            loss.backward()
        return run

    plain = lambda: F.cross_entropy(F.linear(h, w, b).float(), y)  # noqa: E731
    chunked = lambda: linear_cross_entropy(h, w, b, y)  # noqa: E731
    return {"full logits, fp32": cpu_ms(step(plain, False)), "full logits, bf16": cpu_ms(step(plain, True)),
            "chunked, fp32": cpu_ms(step(chunked, False)), "chunked, bf16": cpu_ms(step(chunked, True))}


def adamw_levers() -> dict[str, float]:
    shapes = [(33_278, 256), (256, 256)] + [(768, 256), (256, 256), (1024, 256), (256, 1024)] * 7
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    loop = torch.optim.AdamW(params, lr=1e-3, foreach=False)
    fused = torch.optim.AdamW(params, lr=1e-3, fused=True)
    return {"AdamW per tensor": cpu_ms(loop.step), "AdamW fused": cpu_ms(fused.step)}


def dropout_levers() -> dict[str, float]:
    x = torch.randn(3, 4, 256, 256)
    return {"dropout bernoulli_": cpu_ms(lambda: F.dropout(x, 0.1, True)),
            "dropout uniform < p": cpu_ms(lambda: dropout(x, 0.1, True))}


def decode_levers() -> dict[str, float]:
    head = torch.nn.Linear(256, 33_278, bias=False)
    x = torch.randn(1, 256)
    with torch.no_grad():
        return {"decode head, (V, D) weight": cpu_ms(lambda: head(x), 21),
                "decode head, (D, V) copy": cpu_ms(lambda: x @ transposed_weight(head), 21)}


def peaks() -> dict[str, float]:
    cpu = torch.device("cpu")
    return {f"matmul GFLOP/s {str(dtype).removeprefix('torch.')}": matmul_peak(cpu, dtype) / 1e9
            for dtype in (torch.float32, torch.bfloat16)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    for part in (loss_levers, adamw_levers, dropout_levers, decode_levers, peaks):
        for name, value in part().items():
            results[name] = round(value, 2)
            print(f"{name:<32}{value:>10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
