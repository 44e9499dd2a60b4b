"""Sampling text from a language model, one token at a time.

Each step turns the model's next-token logits into a choice:

    p = softmax(logits / temperature), restricted to the top-k tokens and then to the nucleus
    (the smallest set of tokens whose probability adds up to top_p), renormalised.

Temperature 0 means greedy decoding (argmax). `<unk>` is never chosen unless `allow_unk`: it is
not a word anyone wants to read, only the vocabulary's name for the words it lacks. Each step also
reports its `show_top` likeliest next tokens, with their probability under the model and under
the distribution actually sampled from, so a viewer can show what temperature and top-p did.
A Transformer decodes with its KV cache: the
prompt is encoded once, then each step feeds only the new token. Its learned positions stop at
`context_length`, so the model always reads the last `context_length` tokens at most; once the
text is longer, every step re-encodes that sliding window with a fresh cache (the cached keys
belong to old positions and cannot be shifted). An RNN carries its hidden state instead.
`use_cache=False` recomputes the whole (windowed) prefix every step: the plain reference path
the fast one is tested and benchmarked against.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from labkit.errors import LabkitError

MAX_TOKENS_CAP = 100_000


@dataclass
class SamplingConfig:
    temperature: float = 1.0  # 0 = greedy (argmax)
    top_k: int = 0  # 0 = off; above the vocabulary size it keeps everything
    top_p: float = 1.0  # in (0, 1]; 1 = off; a tiny value keeps only the top token
    max_tokens: int = 50
    seed: int | None = None  # None: drawn from torch's global RNG, so torch.manual_seed applies
    stop_at_eos: bool = True
    show_top: int = 10  # per step, report the k likeliest next tokens (0 = none)
    allow_unk: bool = False  # may <unk> be generated? (greedy decoding skips it too)

    def __post_init__(self) -> None:
        t, p = self.temperature, self.top_p
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise LabkitError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:  # NaN fails
            raise LabkitError(f"top_p must be in (0, 1] (1 = off), got {p!r}")
        if p == 0:
            raise LabkitError("top_p must be > 0; for greedy decoding use temperature 0")
        for name, lo, hi in (("top_k", 0, None), ("max_tokens", 0, MAX_TOKENS_CAP), ("show_top", 0, 1000)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi and v > hi):
                raise LabkitError(f"{name} must be a whole number in [{lo}, {hi or 'inf'}], "
                                  f"got {v!r}")
        if not isinstance(self.allow_unk, bool) or not isinstance(self.stop_at_eos, bool):
            raise LabkitError("allow_unk and stop_at_eos must be True or False")
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or not -2**63 <= seed < 2**64):  # what torch's generator takes
            raise LabkitError(f"seed must be a whole number in [-2**63, 2**64) or None, got "
                              f"{self.seed!r:.40}")


@dataclass
class Candidate:
    """One of a step's likeliest next tokens."""

    id: int
    text: str
    model_prob: float  # under the model's own softmax (temperature 1, nothing cut)
    sampling_prob: float  # under the distribution sampled from (temperature, top-k, top-p; 0 if cut)


@dataclass
class GeneratedToken:
    id: int
    text: str  # the token as the tokenizer shows it alone (a word, or a decoded BPE piece)
    prob: float  # under the sampling distribution (after temperature, top-k, top-p); 1 if greedy
    entropy: float  # nats, of the model's full next-token distribution (temperature 1)
    model_prob: float  # under the model's own softmax (temperature 1, no filtering)
    top: list[Candidate] = field(default_factory=list)  # the step's `show_top` likeliest tokens, best first


@dataclass
class Generation:
    prompt_ids: list[int]  # what the model was conditioned on (after cutting, or [eos])
    tokens: list[GeneratedToken]
    text: str
    notices: list[str] = field(default_factory=list)
    tokens_per_second: float = 0.0
    stop_reason: str = "max_tokens"  # or "eos"


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Logits (V,) or (B, V) with -inf outside the top-k, then outside the nucleus of top_p."""
    logits = logits.clone()
    V = logits.size(-1)
    if 0 < top_k < V:
        # Scatter by index rather than threshold on the k-th value, so ties keep exactly k.
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, logits.topk(top_k, dim=-1).indices, True)
        logits.masked_fill_(~keep, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # mass of the strictly better tokens
        # Drop a token once the better ones already reach top_p; the 1e-6 stops float rounding
        # (0.79999 vs 0.8) adding a token. The top token always stays, however small top_p is.
        drop_sorted = mass_before >= top_p - 1e-6
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits.masked_fill_(drop, float("-inf"))
    return logits


class Stream:
    """Tokens as they are generated. Iterate it; `notices`, `prompt_ids` are ready at once,
    `stop_reason` and `tokens_per_second` once the iteration ends. Use it once."""

    def __init__(self, model: nn.Module, tokenizer: Any, prompt: str, config: SamplingConfig,
                 *, use_cache: bool = True, device: torch.device | str | None = None) -> None:
        if not isinstance(config, SamplingConfig):
            raise LabkitError(f"config must be a SamplingConfig, got {type(config).__name__}")
        if not isinstance(prompt, str):
            raise LabkitError(f"prompt must be text (str), got {type(prompt).__name__}")
        model_vocab = getattr(model.config, "vocab_size", tokenizer.vocab_size)
        if tokenizer.vocab_size != model_vocab:
            raise LabkitError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model "
                              f"{model_vocab}: load both from the same run directory")
        if device is not None:
            model.to(device)  # moves the caller's model, as nn.Module.to always does
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.use_cache = use_cache
        self.device = next(model.parameters()).device
        self.context: int | None = getattr(model.config, "context_length", None)  # None: RNN
        self.notices: list[str] = []
        self.prompt_ids = self._prepare_prompt(prompt)
        self.tokens: list[GeneratedToken] = []
        self.stop_reason = "max_tokens"
        self.elapsed = 0.0
        seed = config.seed if config.seed is not None else int(torch.randint(2**62, ()))
        # Sampling runs on the CPU with a local generator: the same seed gives the same text
        # whatever the device, and the global RNG is not advanced step by step.
        self._rng = torch.Generator().manual_seed(seed)
        self._steps = self._run()

    def _prepare_prompt(self, prompt: str) -> list[int]:
        tok = self.tokenizer
        ids = list(tok.encode(prompt))
        if tok.unk_id is not None and tok.unk_id in ids:
            words = tok.tokenize(prompt) if hasattr(tok, "tokenize") else []
            if len(words) == len(ids):  # word tokenizers: one id per surface word
                oov = dict.fromkeys(w for w, i in zip(words, ids)
                                    if i == tok.unk_id and w != "<unk>")
                shown = list(oov)[:10] + ([f"and {len(oov) - 10} more"] if len(oov) > 10 else [])
                if oov:
                    self.notices.append(f"mapped to <unk>: {', '.join(shown)}")
            else:
                self.notices.append(f"{ids.count(tok.unk_id)} prompt token(s) mapped to <unk>")
        if not ids:
            self.notices.append("empty prompt: starting from <eos>")
            ids = [tok.eos_id]
        if self.context is not None and len(ids) > self.context:
            self.notices.append(f"prompt of {len(ids)} tokens cut to the last {self.context} "
                                f"tokens (the model's context length)")
            ids = ids[-self.context:]
        return ids

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> GeneratedToken:
        return next(self._steps)

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.elapsed if self.elapsed > 0 else 0.0

    def _next_logits(self, seq: list[int], fresh: list[int],
                     state: Any) -> tuple[torch.Tensor, Any]:
        """Logits (V,) for the token after `seq`; `fresh`: the tail of `seq` not yet in `state`."""
        window = seq if self.context is None else seq[-self.context:]
        # an RNN's state is its memory and always comes back; a Transformer keeps a cache when asked
        kw = {} if getattr(self.model, "carries_state", False) else {"use_cache": True}
        if not self.use_cache:
            feed, state, kw = window, None, {}
        elif state is None or (self.context is not None
                               and state.length + len(fresh) > self.context):
            feed, state = window, None  # first step, or the cache is full
        else:
            feed = fresh
        idx = torch.tensor([feed], dtype=torch.long, device=self.device)  # (1, T)
        out = self.model(idx, state, compute_logits=False, **kw)
        # Only the last position's logits are needed: the output layer is most of the cost.
        return self.model.logits(out.hidden[0, -1]).float(), out.state

    def _run(self) -> Iterator[GeneratedToken]:
        cfg, model = self.config, self.model
        was_training = model.training
        model.eval()
        seq, fresh, state = list(self.prompt_ids), list(self.prompt_ids), None
        try:
            for _ in range(cfg.max_tokens):
                start = time.perf_counter()  # per step: the caller's time between is not ours
                # inference_mode per step, not around the yield: it must not leak to the caller.
                with torch.inference_mode():
                    logits, state = self._next_logits(seq, fresh, state)
                    token = self._choose(logits.cpu())
                self.elapsed += time.perf_counter() - start
                if cfg.stop_at_eos and token.id == self.tokenizer.eos_id:
                    self.stop_reason = "eos"
                    return
                seq.append(token.id)
                fresh = [token.id]
                self.tokens.append(token)
                yield token
        finally:
            model.train(was_training)

    def _choose(self, logits: torch.Tensor) -> GeneratedToken:
        """Pick the next token from logits (V,) and describe it."""
        if torch.isnan(logits).any():
            raise LabkitError("the model produced NaN logits: its weights are broken "
                              "(did training diverge?); use another checkpoint")
        cfg = self.config
        log_probs = logits.log_softmax(-1)
        model_probs = log_probs.exp()
        # -sum p log p; where p is 0, log p is -inf: clamped so that 0 * log p stays 0
        entropy = max(0.0, float(-(model_probs * log_probs.clamp(min=-1e30)).sum()))
        allowed = logits.clone()
        unk = self.tokenizer.unk_id
        if not cfg.allow_unk and unk is not None and allowed.numel() > 1:
            allowed[unk] = float("-inf")
        if cfg.temperature == 0:
            i = int(allowed.argmax())
            probs = torch.zeros_like(model_probs, dtype=torch.float64)
            probs[i] = 1.0
        else:
            # Subtract the max first so a tiny temperature cannot overflow to +inf; in float64 so
            # that a temperature below float32's range (1e-300) is not rounded to 0 (0/0 = NaN).
            scaled = (allowed.double() - allowed.max()) / cfg.temperature
            probs = filter_logits(scaled, cfg.top_k, cfg.top_p).softmax(-1)
            i = int(torch.multinomial(probs, 1, generator=self._rng))
        return GeneratedToken(id=i, text=self.tokenizer.id_to_token([i])[0], prob=float(probs[i]),
                              entropy=entropy, model_prob=float(model_probs[i]),
                              top=self._candidates(model_probs, probs))

    def _candidates(self, model_probs: torch.Tensor, probs: torch.Tensor) -> list[Candidate]:
        k = min(self.config.show_top, model_probs.numel())
        if k == 0:
            return []
        best = model_probs.topk(k).indices.tolist()
        texts = self.tokenizer.id_to_token(best)
        return [Candidate(i, str(t), float(model_probs[i]), float(probs[i])) for i, t in zip(best, texts)]


def stream(model: nn.Module, tokenizer: Any, prompt: str, config: SamplingConfig | None = None,
           *, use_cache: bool = True, device: torch.device | str | None = None) -> Stream:
    """Start generating from `prompt`; iterate the result for `GeneratedToken`s as they come."""
    return Stream(model, tokenizer, prompt, config or SamplingConfig(), use_cache=use_cache,
                  device=device)


def generate(model: nn.Module, tokenizer: Any, prompt: str, config: SamplingConfig | None = None,
             **kw: Any) -> Generation:
    """Generate to the end and return everything at once (see `stream` for the arguments)."""
    s = stream(model, tokenizer, prompt, config, **kw)
    tokens = list(s)
    return Generation(prompt_ids=s.prompt_ids, tokens=tokens,
                      text=tokenizer.decode([t.id for t in tokens]), notices=s.notices,
                      tokens_per_second=s.tokens_per_second, stop_reason=s.stop_reason)


def text_pieces(tokenizer: Any, tokens: Any):
    """The generated text piece by piece, reading as `tokenizer.decode` of all of it."""
    sep = "" if tokenizer.kind == "bpe" else " "  # word tokenizers join words with spaces
    pending: list[int] = []
    first = True
    for token in tokens:
        pending.append(token.id)
        text = tokenizer.decode(pending)
        if text.endswith("\ufffd") and len(pending) < 4:  # part of a multi-byte character
            continue
        yield ("" if first else sep) + text
        pending, first = [], False
    if pending:
        yield ("" if first else sep) + tokenizer.decode(pending)
