"""How much does a language model's body say about sentiment? Linear probes on frozen features.

    LABKIT_DATA=../shared/data python benchmarks/linear_probe.py runs/NAME [--train-size 1000] [--seeds 0 1 2]

Encodes SST-2 sentences with the run's body (frozen, eval mode), pools its last layer's states over
the real tokens (last, mean, max, and the three concatenated), standardises them, fits an
L2-regularised logistic regression (L-BFGS) on `--train-size` training sentences, picks the L2
strength on the held-out validation split (never on dev) and prints SST-2 dev accuracy. The same
is done for a body of the same shape with random weights (what the architecture alone gives) and
for a bag of the pretrained input embeddings (what the word vectors alone give). If the pretrained
states probe no better than the random ones, fine-tuning has little for pretraining to add.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.nn import functional as F

from labkit.data.batching import pad_batch
from labkit.data.tasks import TextEncoder, load_task
from labkit.models import build_model
from labkit.models.classifier import pool
from labkit.runs import load_run

POOLINGS = ("last", "mean", "max", "concat")
L2 = (1e-4, 1e-3, 1e-2, 1e-1)
MAX_LEN = 64


@torch.no_grad()
def features(model, rows, pad_id: int, how: str) -> torch.Tensor:
    out = []
    for i in range(0, len(rows), 64):
        ids, _, mask = pad_batch([r[0][:MAX_LEN] or [pad_id] for r in rows[i:i + 64]], pad_id)
        out.append(pool(model(ids, compute_logits=False).hidden.float(), mask, how))
    return torch.cat(out)


@torch.no_grad()
def bag_of_embeddings(model, rows) -> torch.Tensor:
    table = (model.tok_embed if hasattr(model, "tok_embed") else model.embed).weight.float()
    return torch.stack([table[torch.tensor(r[0][:MAX_LEN] or [0])].mean(0) for r in rows])


def labels(rows) -> torch.Tensor:
    return torch.tensor([float(r[1]) for r in rows])


def logistic(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.zeros(x.size(1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    return ((x @ w + b > 0).float() == y).float().mean().item()


def probe(train: torch.Tensor, val: torch.Tensor, test: torch.Tensor, data) -> dict[str, float]:
    """Dev accuracy of the L2 strength that does best on the validation split."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, val, test = ((x - mean) / std for x in (train, val, test))
    fits = {l2: logistic(train, labels(data.train), l2) for l2 in L2}
    best = max(L2, key=lambda l2: accuracy(val, labels(data.val), *fits[l2]))
    return {"l2": best, "val": accuracy(val, labels(data.val), *fits[best]),
            "dev": accuracy(test, labels(data.test), *fits[best])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="draws of the training sentences")
    parser.add_argument("--val-size", type=int, default=1000)
    args = parser.parse_args(argv)
    loaded = load_run(args.run)
    torch.manual_seed(0)
    bodies = {"pretrained": loaded.model.eval(), "random": build_model(loaded.config["model"]).eval()}
    pad = loaded.tokenizer.pad_id
    print(f"{args.run}: linear probes on {args.train_size:,} SST-2 sentences, SST-2 dev accuracy "
          f"(L2 chosen on {args.val_size:,} held-out sentences)", flush=True)
    for seed in args.seeds:
        data = load_task("sst2", TextEncoder(loaded.tokenizer), val_size=args.val_size, train_size=args.train_size,
                         seed=seed)
        for name, body in bodies.items():
            for how in POOLINGS:
                result = probe(*(features(body, part, pad, how) for part in (data.train, data.val, data.test)), data)
                print(json.dumps({"seed": seed, "body": name, "pooling": how, **result}), flush=True)
        bag = probe(*(bag_of_embeddings(bodies["pretrained"], part) for part in (data.train, data.val, data.test)),
                    data)
        print(json.dumps({"seed": seed, "body": "pretrained input embeddings", "pooling": "mean", **bag}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
