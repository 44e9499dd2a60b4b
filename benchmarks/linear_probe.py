"""How much does a language model's last hidden state say about sentiment? A linear probe.

    python benchmarks/linear_probe.py runs/NAME [--train-size 4000]

Encodes SST-2 sentences with the run's body (frozen), standardises the last real token's
hidden state, fits a logistic regression on `--train-size` training sentences and prints its
accuracy on SST-2 dev. A random-weight body of the same shape is probed too, for comparison.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.nn import functional as F

from labkit.data.batching import pad_batch
from labkit.data.tasks import TextEncoder, load_task
from labkit.models import build_model
from labkit.runs import load_run
from labkit.train.finetune import FinetuneConfig


@torch.no_grad()
def last_states(model, examples, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    feats = []
    for i in range(0, len(examples), 64):
        ids, lengths, _ = pad_batch([e[0] for e in examples[i:i + 64]], pad_id)
        hidden = model(ids[:, :model.context_length], compute_logits=False).hidden  # (B, T, D)
        last = (lengths - 1).clamp(min=0, max=hidden.size(1) - 1)
        feats.append(hidden[torch.arange(len(lengths)), last])  # (B, D)
    return torch.cat(feats), torch.tensor([e[1] for e in examples])


def probe(model, data, pad_id: int, steps: int = 500) -> float:
    x, y = last_states(model, data.train, pad_id)
    x_test, y_test = last_states(model, data.test, pad_id)
    mean, std = x.mean(0), x.std(0) + 1e-6
    w = torch.zeros(x.size(1), 2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy((x - mean) / std @ w + b, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (((x_test - mean) / std @ w + b).argmax(1) == y_test).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--train-size", type=int, default=4000)
    args = parser.parse_args(argv)
    loaded = load_run(args.run)
    data = load_task(FinetuneConfig(train_size=args.train_size), TextEncoder(loaded.tokenizer))
    torch.manual_seed(0)
    random_body = build_model(loaded.config["model"]).eval()
    pad = loaded.tokenizer.pad_id
    print(f"{args.run}: linear probe on {len(data.train):,} sentences, SST-2 dev accuracy")
    print(f"  pretrained body: {probe(loaded.model, data, pad):.4f}")
    print(f"  random body:     {probe(random_body, data, pad):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
