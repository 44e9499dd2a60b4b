"""The language-model loss without the full logits in memory.

The plain way to train a word-level LM computes `logits = hidden @ W.T + b` for every position,
a (B*T, V) float32 tensor (20 x 35 positions x 33,278 words = 93 MB per step), then
`cross_entropy(logits, targets)`: log-softmax, gather, and in the backward pass the same size
again for the softmax gradient. On a CPU most of a step goes into writing and reading these
fresh buffers, not into arithmetic.

`linear_cross_entropy` computes the same mean loss, and the same gradients, a few hundred rows
at a time. For each chunk of rows:

    z = h W^T + b                          (chunk, V) logits, held only for this chunk
    loss_i = logsumexp(z_i) - z_i[y_i]
    dz = softmax(z) - onehot(y)            the gradient of the loss with respect to z
    dh = dz W,  dW += dz^T h,  db += sum(dz)

The gradients are computed during the forward pass (the chunk's logits are at hand then) and
only scaled in the backward pass. One tensor of size (B*T, V) is stored: dz of every row, in the
compute dtype, so that dW is one matrix product over all rows at the end (in bf16 that is half
the plain way's fp32 logits, and there is no second one for the softmax's gradient); the logits
themselves and their softmax exist one chunk at a time. The matrix products run in the autocast
dtype when autocast is on (bf16 on CUDA and on CPUs with bf16 instructions) and every softmax in
float32.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CHUNK_ELEMENTS = 1 << 23  # logits per matrix product: about 250 rows of 33,278 words
BLOCK_ELEMENTS = 1 << 19  # logits per softmax block: 2 MB in float32, about 15 rows


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, dtype: torch.dtype, reduction: str, chunk: int) -> torch.Tensor:
        N = hidden.size(0)
        needs = ctx.needs_input_grad
        want_grads = any(needs[:3])
        h = hidden.to(dtype)
        w = weight.to(dtype)
        losses = torch.empty(N, dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if needs[0] else None
        grad_w = None
        grad_b = torch.zeros(weight.size(0), dtype=torch.float32, device=weight.device) \
            if bias is not None and needs[2] else None
        scale = 1.0 / max(N, 1) if reduction == "mean" else 1.0
        block = max(1, min(chunk, BLOCK_ELEMENTS // weight.size(0)))
        dz_all = torch.empty(N, weight.size(0), dtype=dtype, device=hidden.device) if want_grads else None
        for start in range(0, N, chunk):
            rows = slice(start, min(start + chunk, N))
            logits = h[rows] @ w.t()  # (n, V) in the compute dtype
            # The softmax goes through the chunk a few rows at a time: each pass (max, exp, sum,
            # scale) then reads rows that are still in the cache (1.6x faster than whole chunks).
            for r in range(0, logits.size(0), block):
                a, b = start + r, min(start + r + block, rows.stop)
                z, y = logits[r:r + block].float(), targets[a:b]  # (m, V) fp32, (m,)
                if bias is not None:
                    z += bias.float()
                target_logit = z.gather(1, y[:, None]).squeeze(1)  # (m,)
                top = z.amax(dim=-1, keepdim=True)  # (m, 1): subtracted so exp cannot overflow
                z = z.sub_(top).exp_()  # one exp pass gives both the loss and the softmax
                total = z.sum(dim=-1)  # (m,)
                losses[a:b] = top.squeeze(1) + total.log() - target_logit
                if not want_grads:
                    continue
                dz = z.mul_((scale / total)[:, None])  # softmax * scale, in place of the logits
                dz[torch.arange(b - a, device=dz.device), y] -= scale
                if grad_b is not None:
                    grad_b += dz.sum(0)
                dz_all[a:b].copy_(dz)
            if grad_h is not None:
                grad_h[rows] = dz_all[rows] @ w  # (n, D)
        if dz_all is not None and needs[1]:
            grad_w = (dz_all.t() @ h).float()  # (V, D): one product over all rows
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.reduction = reduction
        return losses.sum() * scale if reduction != "none" else losses

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.reduction == "none":
            raise RuntimeError("linear_cross_entropy(reduction='none') has no backward; use 'mean' or 'sum'")
        grad_h, grad_w, grad_b = ctx.saved_tensors
        g = grad_out.float()
        return (None if grad_h is None else grad_h * g.to(grad_h.dtype),
                None if grad_w is None else grad_w * g,
                None if grad_b is None else grad_b * g,
                None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, *, reduction: str = "mean",
                         chunk_rows: int | None = None) -> torch.Tensor:
    """`F.cross_entropy(hidden @ weight.T + bias, targets)` for hidden (N, D), weight (V, D),
    targets (N,), computed `chunk_rows` rows at a time (default: about 2M logits per chunk)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
    chunk = chunk_rows or max(1, CHUNK_ELEMENTS // weight.size(0))
    dtype = _compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, bias, targets, dtype, reduction, chunk)


def lm_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean",
            fused: bool = True) -> torch.Tensor:
    """Next-token cross-entropy of the output layer `head` on hidden states (..., D) against
    targets (...): a plain linear layer (chunked unless `fused` is False) or an adaptive softmax."""
    h, y = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)  # (N, D), (N,)
    if isinstance(head, nn.AdaptiveLogSoftmaxWithLoss):
        nll = adaptive_nll(head, h, y)
        return {"mean": nll.mean, "sum": nll.sum}.get(reduction, lambda: nll)()
    if fused:
        return linear_cross_entropy(h, head.weight, head.bias, y, reduction=reduction)
    return F.cross_entropy(head(h).float(), y, reduction=reduction)


def adaptive_nll(head: nn.AdaptiveLogSoftmaxWithLoss, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row negative log-likelihood (N,) under an adaptive softmax: log p(word) = log p(its
    cluster, from the head) + log p(word | cluster, from that cluster's tail). torch's own forward
    computes the same but mixes dtypes under autocast; here the products follow autocast and the
    log-softmaxes run in fp32."""
    cuts = head.cutoffs  # [shortlist, ..., vocab_size]
    head_logp = F.log_softmax(head.head(hidden).float(), dim=-1)  # (N, shortlist + clusters)
    cluster = torch.bucketize(targets, torch.tensor(cuts[:-1], device=targets.device), right=True)  # 0: head
    # the head's column for each row: the word itself if frequent, else its cluster's entry
    column = torch.where(cluster == 0, targets, cuts[0] + cluster - 1)
    nll = -head_logp.gather(1, column[:, None]).squeeze(1)  # (N,)
    for i, tail in enumerate(head.tail):
        rows = (cluster == i + 1).nonzero().squeeze(1)  # (n,)
        if rows.numel() == 0:
            continue
        tail_logp = F.log_softmax(tail(hidden[rows]).float(), dim=-1)  # (n, cluster size)
        inside = (targets[rows] - cuts[i])[:, None]
        nll = nll.index_add(0, rows, -tail_logp.gather(1, inside).squeeze(1))
    return nll
