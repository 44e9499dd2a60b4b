"""The exercises' checks, themselves checked: for every exercise, typical mistakes (written here as
small functions, the way a student would get them wrong) fail with the message meant for them.
The reference passing and the stub's "not done yet" are in test_exercises.py."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch.nn import functional as F

from labkit.exercises import EXERCISES, evaluate
from labkit.models.hooks import hooks


# --- 01 -------------------------------------------------------------------------------------------
def ppl_summed(probs):
    return math.exp(-sum(math.log(p) for p in probs))


def ppl_no_minus(probs):
    return math.exp(sum(math.log(p) for p in probs) / len(probs))


def ppl_mean_prob(probs):
    return len(probs) / sum(probs)


def vocab_strict(tokens, min_freq, specials=("<unk>", "<eos>")):
    counts = Counter(t for t in tokens if t not in specials)
    return list(specials) + [t for t, c in counts.most_common() if c > min_freq]


def vocab_specials_last(tokens, min_freq, specials=("<unk>", "<eos>")):
    counts = Counter(t for t in tokens if t not in specials)
    return [t for t, c in counts.most_common() if c >= min_freq] + list(specials)


def vocab_alphabetical_ties(tokens, min_freq, specials=("<unk>", "<eos>")):
    counts = Counter(t for t in tokens if t not in specials)
    return list(specials) + sorted((t for t in counts if counts[t] >= min_freq), key=lambda t: (-counts[t], t))


def bptt_unshifted(stream, batch_size, bptt):
    rows = stream[: len(stream) // batch_size * batch_size].view(batch_size, -1)
    return [(rows[:, s:s + bptt], rows[:, s:s + bptt]) for s in range(0, rows.size(1) - 1, bptt)]


def bptt_column_major(stream, batch_size, bptt):
    rows = stream[: len(stream) // batch_size * batch_size].view(-1, batch_size).t()
    out = []
    for s in range(0, rows.size(1) - 1, bptt):
        e = min(s + bptt, rows.size(1) - 1)
        out.append((rows[:, s:e], rows[:, s + 1:e + 1]))
    return out


def bptt_steps_by_batch(stream, batch_size, bptt):
    rows = stream[: len(stream) // batch_size * batch_size].view(batch_size, -1)
    out = []
    for s in range(0, rows.size(1) - 1, batch_size):
        e = min(s + bptt, rows.size(1) - 1)
        out.append((rows[:, s:e], rows[:, s + 1:e + 1]))
    return out


def _merge_words(words, best, skip=True, once=False):
    merged = {}
    for symbols, count in words.items():
        out, i, done = [], 0, False
        while i < len(symbols):
            if tuple(symbols[i:i + 2]) == best and not (once and done):
                out.append(best[0] + best[1])
                done = True
                i += 2 if skip else 1
            else:
                out.append(symbols[i])
                i += 1
        merged[tuple(out)] = count
    return merged


def bpe_unweighted(words):
    pairs = Counter(p for s in words for p in zip(s, s[1:]))
    best = pairs.most_common(1)[0][0]
    return best, _merge_words(words, best)


def _best(words):
    pairs = Counter()
    for s, c in words.items():
        for p in zip(s, s[1:]):
            pairs[p] += c
    return pairs.most_common(1)[0][0]


def bpe_no_skip(words):
    best = _best(words)
    return best, _merge_words(words, best, skip=False)


def bpe_first_only(words):
    best = _best(words)
    return best, _merge_words(words, best, once=True)


# --- 02 -------------------------------------------------------------------------------------------
def rnn_no_tanh(x, h, W_xh, W_hh, b):
    return x @ W_xh.T + h @ W_hh.T + b


def rnn_forgets_h(x, h, W_xh, W_hh, b):
    return torch.tanh(x @ W_xh.T + b)


def rnn_untransposed(x, h, W_xh, W_hh, b):
    return torch.tanh(x @ W_xh.T + h @ W_hh + b)


def _gates(x, h, W_ih, W_hh, b_ih, b_hh):
    return (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, dim=1)


def lstm_ifog(x, h, c, W_ih, W_hh, b_ih, b_hh):
    i, f, o, g = _gates(x, h, W_ih, W_hh, b_ih, b_hh)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def lstm_no_tanh_on_c(x, h, c, W_ih, W_hh, b_ih, b_hh):
    i, f, g, o = _gates(x, h, W_ih, W_hh, b_ih, b_hh)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * c, c


def lstm_sigmoid_candidate(x, h, c, W_ih, W_hh, b_ih, b_hh):
    i, f, g, o = _gates(x, h, W_ih, W_hh, b_ih, b_hh)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.sigmoid(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _window(model, optimizer, x, y, state, clip, *, detach=True, clip_when="before", zero=True):
    out = model(x, state)
    loss = F.cross_entropy(out.logits.reshape(-1, out.logits.size(-1)), y.reshape(-1))
    if zero:
        optimizer.zero_grad()
    loss.backward()
    if clip_when == "before":
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    if clip_when == "after":
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    return loss.item(), (tuple(s.detach() for s in out.state) if detach else out.state)


def tbptt_no_detach(*a):
    return _window(*a, detach=False)


def tbptt_no_clip(*a):
    return _window(*a, clip_when="never")


def tbptt_clip_after_step(*a):
    return _window(*a, clip_when="after")


def tbptt_no_zero_grad(*a):
    return _window(*a, zero=False)


def sampling_times_temperature(logits, temperature=1.0, top_k=0, top_p=1.0):
    from labkit.generate import filter_logits

    return filter_logits(logits * temperature, top_k, top_p).softmax(-1)


def sampling_excludes_crossing(logits, temperature=1.0, top_k=0, top_p=1.0):
    logits = logits / temperature
    if top_k:
        logits = logits.masked_fill(logits < logits.topk(top_k).values[-1], float("-inf"))
    probs = logits.softmax(-1)
    sorted_probs, order = probs.sort(descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order] = sorted_probs.cumsum(0) <= top_p + 1e-6
    keep[order[0]] = True
    probs = probs * keep
    return probs / probs.sum()


def sampling_not_renormalised(logits, temperature=1.0, top_k=0, top_p=1.0):
    probs = (logits / temperature).softmax(-1)
    if top_k:
        probs = probs.masked_fill(probs < probs.topk(top_k).values[-1], 0.0)
    return probs


# --- 03 -------------------------------------------------------------------------------------------
def attention_unmasked(q, k, v):
    w = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1)
    return w @ v, w


def attention_unscaled(q, k, v):
    T = q.size(-2)
    s = (q @ k.transpose(-2, -1)).masked_fill(torch.triu(torch.ones(T, T), 1).bool(), float("-inf"))
    w = s.softmax(-1)
    return w @ v, w


def attention_softmax_over_queries(q, k, v):
    T = q.size(-2)
    s = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).masked_fill(torch.triu(torch.ones(T, T), 1).bool(), -1e9)
    w = s.softmax(-2)
    return w @ v, w


def split_direct(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, n_heads, T, C // n_heads)


def split_no_transpose(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads)


def merge_no_transpose(z):
    B, nh, T, hs = z.shape
    return z.reshape(B, T, nh * hs)


def merge_interleaved(z):
    B, nh, T, hs = z.shape
    return z.permute(0, 2, 3, 1).reshape(B, T, nh * hs)


def _attend(block, h, causal=True):
    B, T, C = h.shape
    nh = block.attn.n_heads
    q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in block.attn.qkv(h).split(C, dim=-1))
    s = q @ k.transpose(-2, -1) / math.sqrt(C // nh)
    if causal:
        s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return block.attn.proj((s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C))


def _mlp(block, h, act=F.gelu):
    return block.mlp.proj(act(block.mlp.fc(h)))


def block_post_ln(x, block):
    x = block.ln1(x + _attend(block, x))
    return block.ln2(x + _mlp(block, x))


def block_no_residual(x, block):
    return _mlp(block, block.ln2(_attend(block, block.ln1(x))))


def block_unmasked(x, block):
    x = x + _attend(block, block.ln1(x), causal=False)
    return x + _mlp(block, block.ln2(x))


def block_relu(x, block):
    x = x + _attend(block, block.ln1(x))
    return x + _mlp(block, block.ln2(x), F.relu)


def block_calls_labkit(x, block):
    return block(x, 0, None)


def _qkv_new(attn, x_new):
    B, _, C = x_new.shape
    return [t.view(B, 1, attn.n_heads, C // attn.n_heads).transpose(1, 2) for t in attn.qkv(x_new).split(C, dim=-1)]


def _finish(attn, q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    B, _, _, _ = q.shape
    return attn.proj((s.softmax(-1) @ v).transpose(1, 2).reshape(B, 1, -1))


def kv_not_appended(attn, x_new, past_k, past_v):
    q, k, v = _qkv_new(attn, x_new)
    return _finish(attn, q, past_k, past_v), torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)


def kv_square_mask(attn, x_new, past_k, past_v):
    q, k, v = _qkv_new(attn, x_new)
    k, v = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
    S = k.size(2)
    return _finish(attn, q, k, v, mask=torch.tril(torch.ones(S, S, dtype=torch.bool))[:1]), k, v


def kv_overwritten(attn, x_new, past_k, past_v):
    q, k, v = _qkv_new(attn, x_new)
    return _finish(attn, q, k, v), k, v


# --- 04 -------------------------------------------------------------------------------------------
def _strided(model, stream, context, stride, score):
    n, total, count = len(stream) - 1, 0.0, 0
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        logp = model(stream[begin:end][None]).logits[0].log_softmax(-1)
        y = stream[begin + 1:end + 1]
        keep = score(begin, end)
        total -= logp[-keep:].gather(1, y[-keep:, None]).sum().item()
        count += keep
        if end == n:
            break
    return total / count


def strided_every_target(model, stream, context, stride):
    return _strided(model, stream, context, stride, lambda b, e: e - b)


def strided_last_stride_only(model, stream, context, stride):
    return _strided(model, stream, context, stride, lambda b, e: min(stride, e - b))


def strided_ignores_stride(model, stream, context, stride):
    return _strided(model, stream, context, context, lambda b, e: e - b)


def _bigram(train, test, V, alpha, *, add=True, below=None, flip=False):
    counts = [[0.0] * V for _ in range(V)]
    for a, b in zip(train, train[1:]):
        if flip:
            a, b = b, a
        counts[a][b] += 1
    nll = 0.0
    for a, b in zip(test, test[1:]):
        row = sum(counts[a])
        p = (counts[a][b] + (alpha if add else 0)) / (row + (alpha * V if below is None else below))
        nll -= math.log(p) if p > 0 else -math.inf
    return math.exp(nll / (len(test) - 1))


def bigram_unsmoothed(train, test, vocab_size, alpha=1.0):
    return _bigram(train, test, vocab_size, alpha, add=False, below=0.0)


def bigram_alpha_once(train, test, vocab_size, alpha=1.0):
    return _bigram(train, test, vocab_size, alpha, below=alpha)


def bigram_backwards(train, test, vocab_size, alpha=1.0):
    return _bigram(train, test, vocab_size, alpha, flip=True)


def surprisal_nats(logits, targets):
    return -logits.log_softmax(-1)[torch.arange(len(targets)), targets]


def surprisal_raw_logits(logits, targets):
    return -logits[torch.arange(len(targets)), targets] / math.log(2)


# --- 05 -------------------------------------------------------------------------------------------
def mean_with_padding(hidden, mask):
    return hidden.mean(1)


def mean_unclamped(hidden, mask):
    m = mask.unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1)


def mean_over_padded_length(hidden, mask):
    return (hidden * mask.unsqueeze(-1)).sum(1) / hidden.size(1)


def _pools(hidden, mask):
    lengths = mask.sum(1)
    last = hidden[torch.arange(len(hidden)), lengths - 1]
    top = hidden.masked_fill(~mask[..., None], float("-inf")).max(1).values
    mean = (hidden * mask[..., None]).sum(1) / lengths[:, None]
    return last, top, mean


def concat_last_column(hidden, mask):
    _, top, mean = _pools(hidden, mask)
    return torch.cat([hidden[:, -1], top, mean], -1)


def concat_wrong_order(hidden, mask):
    last, top, mean = _pools(hidden, mask)
    return torch.cat([mean, top, last], -1)


def concat_max_over_padding(hidden, mask):
    last, _, mean = _pools(hidden, mask)
    return torch.cat([last, hidden.max(1).values, mean], -1)


def slanted_from_zero(step, total, base_lr, warmup, min_ratio=0.1):
    if step < warmup:
        return base_lr * step / warmup
    p = min(1.0, (step - warmup) / (total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * (1 - p))


def slanted_to_zero(step, total, base_lr, warmup, min_ratio=0.1):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * (1 - min(1.0, (step - warmup) / (total - warmup)))


def slanted_no_floor(step, total, base_lr, warmup, min_ratio=0.1):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    p = (step - warmup) / (total - warmup)
    return base_lr * (min_ratio + (1 - min_ratio) * (1 - p))


# --- 06 -------------------------------------------------------------------------------------------
def ablate_position(model, ids, layer, head):
    def off(z, point):
        z = z.clone()
        z[:, :, head] = 0.0
        return z
    with hooks(model, {f"blocks.{layer}.attn.hook_z": off}):
        return model(ids).logits


def ablate_hook_left_on(model, ids, layer, head):
    def off(module, inputs, z):
        z = z.clone()
        z[:, head] = 0.0
        return z
    model.blocks[layer].attn.hook_z.register_forward_hook(off)
    return model(ids).logits


def ablate_returns_nothing(model, ids, layer, head):
    def off(z, point):
        z = z.clone()
        z[:, head] = 0.0  # changed a copy, returned nothing
    with hooks(model, {f"blocks.{layer}.attn.hook_z": off}):
        return model(ids).logits


def prev_with_position_0(pattern):
    t = torch.arange(pattern.size(0))
    return pattern[t, t - 1].mean().item()


def prev_diagonal(pattern):
    return pattern.diagonal()[1:].mean().item()


def entropy_nan(pattern):
    a = pattern[1:]
    return -(a * a.log()).sum(-1).mean().item()


def entropy_with_row_0(pattern):
    return -torch.xlogy(pattern, pattern).sum(-1).mean().item()


def entropy_bits(pattern):
    a = pattern[1:]
    return -(torch.xlogy(a, a) / math.log(2)).sum(-1).mean().item()


MUTANTS = {
    "01.perplexity": [(ppl_summed, "summed, not averaged"), (ppl_no_minus, "the minus sign is missing"),
                      (ppl_mean_prob, "you averaged the probabilities")],
    "01.vocab": [(vocab_strict, "the cut-off is off by one"), (vocab_specials_last, "the specials must come first"),
                 (vocab_alphabetical_ties, "ties must keep their order of first appearance")],
    "01.bptt": [(bptt_unshifted, "the targets are not shifted by one"), (bptt_column_major, "the rows are not contiguous"),
                (bptt_steps_by_batch, "the windows step by batch_size")],
    "01.bpe_merge": [(bpe_unweighted, "pairs were counted once per word"), (bpe_no_skip, "skip its second symbol"),
                     (bpe_first_only, "only the first occurrence in each word")],
    "02.rnn_step": [(rnn_no_tanh, "the tanh is missing"), (rnn_forgets_h, "the previous state h_{t-1} was not used"),
                    (rnn_untransposed, "W_hh is used untransposed")],
    "02.lstm_cell": [(lstm_ifog, "the gates are in the wrong order"), (lstm_no_tanh_on_c, "the tanh on the cell is missing"),
                     (lstm_sigmoid_candidate, "the candidate g takes a tanh")],
    "02.tbptt": [(tbptt_no_detach, "the state was not detached: gradients flow into the previous window"),
                 (tbptt_no_clip, "the gradients were not clipped"),
                 (tbptt_clip_after_step, "not clipped before optimizer.step()"),
                 (tbptt_no_zero_grad, "the gradients were not zeroed")],
    "02.sampling": [(sampling_times_temperature, "did you multiply by the temperature?"),
                    (sampling_excludes_crossing, "the nucleus must include the token that crosses top_p"),
                    (sampling_not_renormalised, "the probabilities were not renormalised")],
    "03.attention": [(attention_unmasked, "the mask is missing: position 0 attends to position 3"),
                     (attention_unscaled, "did you divide by sqrt(d_k)?"),
                     (attention_softmax_over_queries, "the softmax ran over the queries")],
    "03.split_heads": [(split_direct, "you reshaped to (B, n_heads, T, hs) directly"),
                       (split_no_transpose, "did you forget .transpose(1, 2)?")],
    "03.merge_heads": [(merge_no_transpose, "without moving the heads back"), (merge_interleaved, "interleaved")],
    "03.block": [(block_post_ln, "post-LN"), (block_no_residual, "the residual connection is missing"),
                 (block_unmasked, "the mask is missing"), (block_relu, "GELU"),
                 (block_calls_labkit, "write the block from its parts")],
    "03.kv_cache": [(kv_not_appended, "key and value were not appended"), (kv_square_mask, "a mask made for a square"),
                    (kv_overwritten, "the cache was replaced")],
    "04.strided": [(strided_every_target, "counted more than once"), (strided_last_stride_only, "were never scored"),
                   (strided_ignores_stride, "the stride was ignored")],
    "04.bigram": [(bigram_unsmoothed, "no smoothing: a pair never seen in train gets probability 0"),
                  (bigram_alpha_once, "alpha * V"),
                  (bigram_backwards, "counted backwards")],
    "04.surprisal": [(surprisal_nats, "these are nats"), (surprisal_raw_logits, "logits are not log-probabilities")],
    "05.mean_pool": [(mean_with_padding, "padding was averaged in"), (mean_unclamped, "0 / 0 = nan"),
                     (mean_over_padded_length, "divided by the padded length T")],
    "05.concat_pool": [(concat_last_column, "hidden[:, -1] reads padding"),
                       (concat_wrong_order, "the order is [last, max, mean]"),
                       (concat_max_over_padding, "the max ran over the padding")],
    "05.slanted": [(slanted_from_zero, "the warm-up starts at 0"), (slanted_to_zero, "not at 0"),
                   (slanted_no_floor, "stays at its floor")],
    "06.ablate_head": [(ablate_position, "you zeroed a position, not a head"), (ablate_hook_left_on, "the hook is still on"),
                       (ablate_returns_nothing, "a hook must RETURN the new tensor")],
    "06.prev_token": [(prev_with_position_0, "position 0 has no previous token"), (prev_diagonal, "on itself (the diagonal)")],
    "06.entropy": [(entropy_nan, "0 * log(0) is nan"), (entropy_with_row_0, "position 0 was averaged in"),
                   (entropy_bits, "labkit measures entropy in nats")],
}


def test_every_exercise_has_at_least_two_typical_mistakes():
    assert set(MUTANTS) == set(EXERCISES)
    assert all(len(m) >= 2 for m in MUTANTS.values())


@pytest.mark.parametrize(("name", "mutant", "message"),
                         [(n, f, m) for n, items in MUTANTS.items() for f, m in items],
                         ids=[f"{n}-{f.__name__}" for n, items in MUTANTS.items() for f, _ in items])
def test_a_typical_mistake_fails_with_its_message(name, mutant, message):
    result = evaluate(name, mutant)
    assert result.status == "failed", result
    assert message in result.message, result.message
