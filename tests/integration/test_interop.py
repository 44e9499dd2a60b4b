"""labkit and the tools around it: Hugging Face GPT-2 folders out and in (checked against
`transformers` itself: logits, tokenizer ids, greedy generation), nanoGPT ckpt.pt files in
(against a GPT-2 computing what nanoGPT's model computes), TensorBoard scalars (read back with
TensorBoard's own event reader), and every kind of bad input refused in one line, leaving nothing.

Everything is built here: tiny random GPT-2 models (`GPT2Config` + `save_pretrained`), tokenizers
trained on a few lines, nanoGPT-format dicts saved with `torch.save`, tiny labkit runs trained on
labkit's synthetic corpus. Nothing is downloaded (the hub is switched off for transformers too).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: a test must never reach the hub
transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

from labkit.data import DataConfig  # noqa: E402
from labkit.data.lm import corpus_lines, load_lm_data  # noqa: E402
from labkit.data.tokenizers import BPETokenizer, WordTokenizer, count_words, load_tokenizer  # noqa: E402
from labkit.generate import SamplingConfig, generate  # noqa: E402
from labkit.interop import import_checkpoint  # noqa: E402
from labkit.models import RNNConfig, TransformerConfig, build_model, config_from_dict  # noqa: E402
from labkit.runs import RunDir, load_run, read_metrics  # noqa: E402
from labkit.train import TrainConfig  # noqa: E402
from labkit.train.pretrain import pretrain  # noqa: E402

EOT = "<|endoftext|>"
SENTENCES = [  # real text: punctuation, quotes, digits, accents, an emoji, odd spacing
    "The quick brown fox jumps over the lazy dog.",
    "\"Don't stop,\" she said; it was 3.14 a.m. (roughly) on 12 May 2021!",
    "Ünïcödé words like café and naïve, and an emoji 😀, sit beside plain ones.",
    " = Valkyria Chronicles III = ",
    "the dog behind the birds quickly finds the robots .",
    "max gave ana a key . ana kept key and max went home .",
    "Tabs\tand  double  spaces, and a line break\nin the middle.",
]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def labkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit", *map(str, args)], cwd=cwd, env=environment(),
                          capture_output=True, text=True, timeout=300)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code 2 and exactly one line on stderr, `labkit: error: ...` (no traceback); the line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("labkit: error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return out.logits


# --- what the tests are made of ----------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic() -> dict[str, list[str]]:
    return corpus_lines(DataConfig(corpus="synthetic"))


@pytest.fixture(scope="module")
def gpt2_tokenizer(synthetic) -> HFTokenizer:
    """A GPT-2-style byte-level BPE (only <|endoftext|> special) trained on a few lines."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(synthetic["train"][:800] + SENTENCES, trainers.BpeTrainer(
        vocab_size=400, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return hf


def save_gpt2(folder: Path, tokenizer: HFTokenizer | None, seed: int = 0, **options) -> transformers.GPT2LMHeadModel:
    """A tiny random GPT2LMHeadModel saved as a Hugging Face folder (its tokenizer.json beside it)."""
    torch.manual_seed(seed)
    vocab = tokenizer.get_vocab_size() if tokenizer else options.pop("vocab_size")
    eos = tokenizer.token_to_id(EOT) if tokenizer else 0
    # weights 10x GPT-2's usual scale: at 0.02 the exact and the tanh GELU differ by 3e-7 in the logits, so
    # that a mix-up of the two would pass unseen; at 0.2, by 2e-3
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=64, vocab_size=vocab,
                                     bos_token_id=eos, eos_token_id=eos, initializer_range=0.2, **options)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # LayerNorms away from (1, 0), so that a mix-up of them shows
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save(str(folder / "tokenizer.json"))
    return model


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Tiny labkit runs trained for a few steps on the synthetic corpus: a BPE Transformer, word-level
    ones (whitespace; basic_english, untied, with the tanh GELU) and an LSTM."""
    root = tmp_path_factory.mktemp("runs")
    train = TrainConfig(max_steps=8, batch_size=8, seq_len=32, eval_every=4, log_every=2, lr=3e-3, device="cpu",
                        seed=1, precision="fp32")
    small = dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, context_length=64, dropout=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, tokenizer, extra in (("bpe", "bpe", {}), ("whitespace", "whitespace", {}),
                                       ("basic", "basic_english", {"tie_weights": False, "activation": "gelu_tanh"})):
            data_config = DataConfig(corpus="synthetic", tokenizer=tokenizer, vocab_size=400, train_tokens=20_000,
                                     eval_tokens=2_000)
            data = load_lm_data(data_config)
            pretrain(TransformerConfig(vocab_size=data.tokenizer.vocab_size, **small, **extra), train, data_config,
                     root / name, data=data)
        data_config = DataConfig(corpus="synthetic", train_tokens=20_000, eval_tokens=2_000)
        data = load_lm_data(data_config)
        pretrain(RNNConfig(vocab_size=data.tokenizer.vocab_size, d_embed=16, d_hidden=16, n_layers=1, dropout=0.0),
                 train, data_config, root / "lstm", data=data)
        basic = load_run(root / "basic")  # its MLP inputs large enough that the tanh GELU differs from the exact one
        with torch.no_grad():
            for block in basic.model.blocks:
                block.mlp.fc.weight.mul_(10)
        basic.run.save_best(basic.model)
    finally:
        torch.set_num_threads(threads)
    return root


def greedy_pair(model, tokenizer, hf_model, hf_tokenizer, prompt: str, n: int = 12) -> tuple:
    """labkit's greedy continuation and transformers' generate(do_sample=False), as (ids, text) each."""
    ours = generate(model, tokenizer, prompt, SamplingConfig(temperature=0, max_tokens=n, allow_unk=True))
    ids = hf_tokenizer(prompt)["input_ids"] if prompt else [tokenizer.eos_id]
    assert ids == ours.prompt_ids
    out = hf_model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=n, min_new_tokens=0,
                            pad_token_id=tokenizer.pad_id)[0, len(ids):].tolist()
    theirs = out[:out.index(tokenizer.eos_id) + 1] if tokenizer.eos_id in out else out
    return ([t.id for t in ours.tokens], ours.text), (theirs, hf_tokenizer.decode(theirs))


# --- import: Hugging Face ----------------------------------------------------------------------
def test_import_hf_gpt2_gives_its_logits_ids_and_greedy_text(tmp_path, gpt2_tokenizer):
    folder = tmp_path / "models--tiny--gpt2" / "snapshots" / "0123abcd"  # as a Hugging Face cache holds one
    folder.mkdir(parents=True)
    hf = save_gpt2(folder, gpt2_tokenizer)  # GPT-2's defaults: gelu_new, tied output layer
    result = ok(labkit("import", folder, "--runs-dir", tmp_path / "runs", cwd=tmp_path))
    n = sum(p.numel() for p in hf.parameters())
    assert f"{n:,} parameters: about {4 * n / 1e6:.1f} MB of memory" in result.stderr  # said before loading
    run = tmp_path / "runs" / "tiny-gpt2"  # the cache folder's model name
    loaded = load_run(run)
    assert loaded.model.config.activation == "gelu_tanh" and loaded.model.config.tie_weights
    ids = torch.randint(0, hf.config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(logits_of(loaded.model, ids), logits_of(hf, ids), atol=1e-5, rtol=0)

    tok = loaded.tokenizer
    assert isinstance(tok, BPETokenizer) and tok.specials == {"eos": EOT, "unk": None, "pad": None, "newline": "\n"}
    assert (tok.eos_id, tok.unk_id, tok.pad_id) == (gpt2_tokenizer.token_to_id(EOT), None, tok.eos_id)
    assert tok.encode_lines(["a b", "c"]).tolist() == [*tok.encode("a b"), *gpt2_tokenizer.encode("\n").ids,
                                                        *tok.encode("c"), *gpt2_tokenizer.encode("\n").ids]
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=gpt2_tokenizer)
    for s in SENTENCES:
        assert tok.encode(s) == fast(s)["input_ids"] and tok.decode(tok.encode(s)) == s
    for prompt in ("the dog behind", ""):
        ours, theirs = greedy_pair(loaded.model, tok, hf, fast, prompt)
        assert ours == theirs and len(ours[0]) > 0

    card, config = RunDir(run).read_card(), RunDir(run).load_config()
    assert card["status"] == "finished" and card["kind"] == "lm" and card["family"] == "transformer"
    assert card["parameters"] == n and card["imported_from"] == str(folder.resolve())
    assert config["source"]["format"] == "hf" and config["source"]["model_type"] == "gpt2"
    assert config["data"]["corpus"] == "wikitext-2" and config["train"]["seq_len"] == 64
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name != "tiny-gpt2"]  # no temporary left


@pytest.mark.parametrize("options", [
    {"tie_word_embeddings": False, "activation_function": "gelu", "n_inner": 24},
    {"activation_function": "gelu_pytorch_tanh", "resid_pdrop": 0.0},
])
def test_import_hf_untied_exact_gelu_and_other_widths(tmp_path, gpt2_tokenizer, options):
    hf = save_gpt2(tmp_path / "hf", gpt2_tokenizer, seed=3, **options)
    import_checkpoint(tmp_path / "hf", tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    assert loaded.model.config.tie_weights == options.get("tie_word_embeddings", True)
    assert loaded.model.config.d_ff == options.get("n_inner", 64)
    ids = torch.randint(0, hf.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(logits_of(loaded.model, ids), logits_of(hf, ids), atol=1e-5, rtol=0)


def test_imported_gpt2_is_evaluated_generated_and_finetuned_like_any_run(tmp_path, gpt2_tokenizer, synthetic):
    hf = save_gpt2(tmp_path / "hf", gpt2_tokenizer, seed=5)
    ok(labkit("import", tmp_path / "hf", "--name", "g", "--corpus", "synthetic", cwd=tmp_path))
    # labkit eval: strided windows of 64 moving by 32 over the test split, lines ended by "\n"'s token;
    # the same figure computed here with transformers, window by window
    result = ok(labkit("eval", "g", "--split", "test", cwd=tmp_path))
    newline = gpt2_tokenizer.encode("\n").ids
    stream = torch.tensor([i for line in synthetic["test"] for i in gpt2_tokenizer.encode(line).ids + newline])
    nll, scored, begin, n = 0.0, 0, 0, stream.numel() - 1
    while scored < n:
        end = min(begin + 64, n)
        logits = logits_of(hf, stream[None, begin:end])[0]
        targets = stream[begin + 1:end + 1]
        nll += torch.nn.functional.cross_entropy(logits[scored - begin:], targets[scored - begin:], reduction="sum").item()
        scored, begin = end, begin + 32
    loss = nll / n  # and word perplexity as labkit defines it: words per token over the whole stream
    word_ppl = torch.exp(torch.tensor(loss * stream.numel() / count_words(synthetic["test"]), dtype=torch.float64)).item()
    printed = re.search(r"loss (\S+)  ppl \S+  word ppl (\S+)", result.stdout)
    assert printed and f"{n:,} tokens" in result.stdout, result.stdout
    assert float(printed[1]) == pytest.approx(loss, abs=6e-5) and float(printed[2]) == pytest.approx(word_ppl, rel=1e-5)

    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=gpt2_tokenizer)
    loaded = load_run(tmp_path / "runs" / "g")
    (_, text), _ = greedy_pair(loaded.model, loaded.tokenizer, hf, fast, "the robot", n=10)
    out = ok(labkit("generate", "g", "--prompt", "the robot", "--temperature", "0", "--max-tokens", "10",
                    "--allow-unk", "--no-stream", cwd=tmp_path))
    assert out.stdout == text + "\n"
    ok(labkit("finetune", "g", "--task", "number", "--max-steps", "2", "--lm-steps", "0", "--eval-every", "1", "--val-size", "20",
              "--device", "cpu", "--no-progress", "--name", "g-number", cwd=tmp_path))
    assert RunDir(tmp_path / "runs" / "g-number").read_card()["status"] == "finished"


def test_import_sharded_and_torch_hf_checkpoints_and_refuse_one_missing_a_shard(tmp_path, gpt2_tokenizer):
    hf = save_gpt2(tmp_path / "one", gpt2_tokenizer, seed=11)
    (tmp_path / "one" / "model.safetensors").unlink()  # an older folder: pytorch_model.bin (weights_only)
    torch.save(hf.state_dict(), tmp_path / "one" / "pytorch_model.bin")
    import_checkpoint(tmp_path / "one", tmp_path / "from-bin")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")  # as large models are stored
    gpt2_tokenizer.save(str(tmp_path / "sharded" / "tokenizer.json"))
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    import_checkpoint(tmp_path / "sharded", tmp_path / "run")
    ids = torch.randint(0, hf.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(5))
    for run in ("run", "from-bin"):
        assert torch.allclose(logits_of(load_run(tmp_path / run).model, ids), logits_of(hf, ids), atol=1e-5, rtol=0)
    shards[1].unlink()
    refused(labkit("import", tmp_path / "sharded", "--runs-dir", tmp_path / "runs", cwd=tmp_path),
            "names shards that are not there", shards[1].name)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


# --- import: nanoGPT ---------------------------------------------------------------------------
def nanogpt_state(hf: transformers.GPT2LMHeadModel, bias: bool, compiled: bool) -> dict[str, torch.Tensor]:
    """What nanoGPT's GPT with the same weights holds: nn.Linear layouts (out, in), no biases
    without `bias`, the output layer under both names (tied), `_orig_mod.` when compiled."""
    state = {}
    for name, tensor in hf.state_dict().items():
        if not bias and name.endswith(".bias"):
            continue
        conv = any(part in name for part in ("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        state[("_orig_mod." if compiled else "") + name] = (tensor.t() if conv else tensor).clone()
    state[("_orig_mod." if compiled else "") + "transformer.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    return state


@pytest.mark.parametrize("bias, compiled", [(True, False), (False, True)])
def test_import_nanogpt_ckpt_with_padded_vocabulary(tmp_path, gpt2_tokenizer, bias, compiled):
    vocab = gpt2_tokenizer.get_vocab_size()
    padded = vocab + 21  # nanoGPT rounds GPT-2's 50,257 up to 50,304 the same way
    hf = save_gpt2(tmp_path / "ref", None, seed=7, vocab_size=padded, activation_function="gelu")  # nanoGPT: exact GELU
    optimizer = torch.optim.AdamW(hf.parameters())  # (a real checkpoint holds its optimizer's state too)
    hf(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    optimizer.step()
    if not bias:  # a bias=False nanoGPT computes what this GPT-2 with zero biases computes
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if name.endswith(".bias"):
                    p.zero_()
    model_args = dict(n_layer=2, n_head=2, n_embd=16, block_size=64, bias=bias, vocab_size=padded, dropout=0.0)
    torch.save({"model": nanogpt_state(hf, bias, compiled), "optimizer": optimizer.state_dict(),
                "model_args": model_args, "iter_num": 5000, "best_val_loss": torch.tensor(1.4697),
                "config": {"dataset": "shakespeare", "batch_size": 12}}, tmp_path / "ckpt.pt")
    gpt2_tokenizer.save(str(tmp_path / "tok.json"))
    ok(labkit("import", tmp_path / "ckpt.pt", "--tokenizer", tmp_path / "tok.json", "--name", "nano", cwd=tmp_path))
    loaded = load_run(tmp_path / "runs" / "nano")
    assert loaded.tokenizer.vocab_size == padded == loaded.model.config.vocab_size
    assert loaded.tokenizer.id_to_token([vocab, padded - 1]) == [f"<|unused_{vocab}|>", f"<|unused_{padded - 1}|>"]
    assert loaded.tokenizer.encode(SENTENCES[1]) == gpt2_tokenizer.encode(SENTENCES[1]).ids  # the real ids unmoved
    assert loaded.model.config.activation == "gelu" and loaded.model.config.tie_weights
    ids = torch.randint(0, vocab, (2, 64), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(logits_of(loaded.model, ids), logits_of(hf, ids), atol=1e-5, rtol=0)
    source = RunDir(tmp_path / "runs" / "nano").load_config()["source"]
    assert source["format"] == "nanogpt" and source["iter_num"] == 5000 and source["dataset"] == "shakespeare"
    assert source["best_val_loss"] == pytest.approx(1.4697) and source["model_args"]["bias"] is bias
    assert RunDir(tmp_path / "runs" / "nano").read_card()["steps"] == 5000


class Payload:
    """Unpickling this would create a folder: the sign that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_payload_in_ckpt_pt_is_refused_without_running(tmp_path, gpt2_tokenizer):
    marker = tmp_path / "code-ran"
    state = {"transformer.wte.weight": torch.zeros(4, 16)}
    torch.save({"model": state, "model_args": {"n_layer": 1}, "extra": Payload(marker)}, tmp_path / "ckpt.pt")
    gpt2_tokenizer.save(str(tmp_path / "tok.json"))
    line = refused(labkit("import", tmp_path, "--tokenizer", tmp_path / "tok.json", cwd=tmp_path),
                   "pickled Python object", "never unpickles")
    assert "mkdir" in line and not marker.exists()
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


# --- bad input ---------------------------------------------------------------------------------
def test_bad_checkpoints_get_one_line_and_leave_nothing(tmp_path, gpt2_tokenizer):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16}))
    save_gpt2(tmp_path / "odd", gpt2_tokenizer, scale_attn_by_inverse_layer_idx=True, layer_norm_epsilon=1e-6,
              add_cross_attention=True)
    save_gpt2(tmp_path / "cut", gpt2_tokenizer)
    weights = tmp_path / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    save_gpt2(tmp_path / "notok", None, vocab_size=40)
    torch.save({"model": {}, "model_args": {}}, tmp_path / "ckpt.pt")
    runs = tmp_path / "runs"
    cases = [(["empty"], ["neither a Hugging Face GPT-2 folder", "nor a nanoGPT ckpt.pt"]),
             (["bert"], ["bert checkpoint, not GPT-2"]),
             (["odd"], ["cannot compute exactly", "scale_attn_by_inverse_layer_idx", "layer_norm_epsilon 1e-06",
                        "add_cross_attention"]),
             (["cut"], ["not a readable safetensors file", "truncated"]),
             (["notok"], ["has no tokenizer", "--tokenizer"]),
             (["ckpt.pt"], ["nanoGPT checkpoint holds no tokenizer"]),
             (["missing"], ["does not exist"]),
             (["cut", "--name", "../x"], ["invalid run name"])]
    for args, words in cases:
        refused(labkit("import", *args, "--runs-dir", runs, cwd=tmp_path), *words)
    tokenizer = tmp_path / "tok.json"
    gpt2_tokenizer.save(str(tokenizer))
    refused(labkit("import", "ckpt.pt", "--tokenizer", tokenizer, "--runs-dir", runs, cwd=tmp_path),
            "model_args lacks n_layer")
    assert not runs.exists() or not list(runs.iterdir())  # nothing half-written, no temporary folder
    save_gpt2(tmp_path / "good", gpt2_tokenizer)
    ok(labkit("import", "good", "--runs-dir", runs, cwd=tmp_path))
    refused(labkit("import", "good", "--runs-dir", runs, cwd=tmp_path), "already exists")
    refused(labkit("import", runs / "good", "--runs-dir", runs, "--name", "again", cwd=tmp_path), "a labkit run already")
    assert sorted(p.name for p in runs.iterdir()) == ["good"]


def test_export_refuses_what_has_no_gpt2_form(tmp_path, runs):
    refused(labkit("export", runs / "lstm", "--format", "hf", tmp_path / "out", cwd=tmp_path),
            "LSTM language model", "only Transformer")
    (tmp_path / "taken").mkdir()
    refused(labkit("export", runs / "bpe", "--format", "hf", tmp_path / "taken", cwd=tmp_path), "already exists")
    word = load_tokenizer(RunDir(runs / "basic").tokenizer_path)
    greek = WordTokenizer("basic_english", type(word.vocab)([*word.vocab.itos, "σοφία"]))
    from labkit.interop.tokenizer import hf_tokenizer_files

    with pytest.raises(Exception, match="lowercase differently"):
        hf_tokenizer_files(greek, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


# --- export: Hugging Face, and back ------------------------------------------------------------
@pytest.mark.parametrize("name", ["bpe", "whitespace", "basic"])
def test_export_hf_loads_in_transformers_with_the_same_logits_ids_and_text(tmp_path, runs, synthetic, name):
    out = tmp_path / "hf"
    ok(labkit("export", runs / name, "--format", "hf", out, cwd=tmp_path))
    ours = load_run(runs / name)
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    V = ours.model.config.vocab_size
    ids = torch.randint(0, V, (3, 64), generator=torch.Generator().manual_seed(4))
    assert torch.allclose(logits_of(hf, ids), logits_of(ours.model, ids), atol=1e-5, rtol=0)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    texts = SENTENCES + synthetic["test"][:50] + ["a<unk>b <unk>. x", "odd\x1cseparators\x1fhere", "ΟΔΟΣ Straße İstanbul"]
    for text in texts:
        assert hf_tok(text)["input_ids"] == ours.tokenizer.encode(text), text
    sample = ours.tokenizer.encode(synthetic["test"][0])
    assert hf_tok.decode(sample) == ours.tokenizer.decode(sample)
    for prompt in ("the dog", "max gave ana"):
        mine, theirs = greedy_pair(ours.model, ours.tokenizer, hf, hf_tok, prompt)
        assert mine == theirs

    # and back: import(export(run)) is the same model, with the same tokenizer
    import_checkpoint(out, tmp_path / "back")
    back = load_run(tmp_path / "back")
    assert torch.equal(logits_of(back.model, ids), logits_of(ours.model, ids))
    assert type(back.tokenizer) is type(ours.tokenizer) and back.tokenizer.to_dict() == ours.tokenizer.to_dict()
    assert back.model.config.to_dict() == ours.model.config.to_dict()


def test_word_export_splits_like_labkit_at_every_character():
    """Every code point between two words: the Hugging Face rules split (or not) where labkit does."""
    from labkit.interop.tokenizer import hf_word_tokenizer, lowercase_disagreements

    chars = [chr(c) for c in range(1, 0x3100) if not 0xD800 <= c < 0xE000]
    for kind in ("whitespace", "basic_english"):
        # (basic_english: the vocabulary without the characters the two sides lowercase differently, which
        # refuse the export; the texts with them, which both sides then read as unknown words)
        odd = lowercase_disagreements() if kind == "basic_english" else set()
        tok = WordTokenizer.train([f"a{c}b c{c}D e" for c in chars if c not in odd and not set(c.lower()) & odd],
                                  split=kind)
        hf = hf_word_tokenizer(tok)
        texts = [f"a{c}b c{c}D e" for c in chars]
        assert [e.ids for e in hf.encode_batch(texts)] == [tok.encode(t) for t in texts]


# --- the activation field and old files ---------------------------------------------------------
def test_old_configs_and_tokenizer_files_still_load_and_the_fast_path_honours_the_activation(tmp_path):
    old = TransformerConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, d_ff=32, context_length=8).to_dict()
    del old["activation"]
    assert config_from_dict(old).activation == "gelu"  # a run saved before the field: the exact GELU, as then
    bpe = BPETokenizer.train(SENTENCES * 5, vocab_size=300)
    data = bpe.to_dict()
    del data["specials"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    again = load_tokenizer(tmp_path / "old.json")
    assert (again.unk_id, again.pad_id, again.eos_id) == (0, 1, 2) and again.encode_lines(["a"]).tolist()[-1] == 2
    config = config_from_dict(old | {"activation": "gelu_tanh"})
    torch.manual_seed(0)
    plain = build_model(config, fast=False).eval()
    fast = build_model(config).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randint(0, 50, (2, 8))
    assert torch.allclose(logits_of(fast, x), logits_of(plain, x), atol=1e-6)
    mlp, h = plain.blocks[0].mlp, torch.randn(5, 16)
    u = mlp.fc(h)
    gelu_new = 0.5 * u * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (u + 0.044715 * u**3)))  # GPT-2's, as it is written
    assert torch.allclose(mlp(h), mlp.proj(gelu_new), atol=1e-6)
    exact = build_model(config.replace(activation="gelu"), fast=False).blocks[0].mlp
    exact.load_state_dict(mlp.state_dict())
    assert not torch.allclose(exact(h), mlp(h), atol=1e-6)  # (so the check above can fail)


# --- TensorBoard -------------------------------------------------------------------------------
def event_values(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, float(make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
            for tag in events.Tags()["tensors"]}


def expected_values(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    import numpy as np

    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        evaluation = any(k.startswith(("val_", "test_")) for k in r)
        for key, value in r.items():
            if key == "step" or value is None or (evaluation and not key.startswith(("val_", "test_"))):
                continue
            tag = f"val/{key[4:]}" if key.startswith("val_") else f"test/{key[5:]}" if key.startswith("test_") \
                else f"train/{key}"
            out.setdefault(tag, []).append((r["step"], float(np.float32(value))))
    return out


def test_tensorboard_scalars_live_and_exported_equal_the_metrics_records(tmp_path):
    ok(labkit("pretrain", "--model", "transformer", "--layers", "1", "--d-model", "16", "--heads", "2",
              "--context", "16", "--corpus", "synthetic", "--train-tokens", "5000", "--eval-tokens", "500",
              "--steps", "6", "--eval-every", "3", "--log-every", "2", "--seq-len", "16", "--batch-size", "4",
              "--device", "cpu", "--no-progress", "--name", "tb-run", "--tensorboard", "tb", cwd=tmp_path))
    records = read_metrics(RunDir(tmp_path / "runs" / "tb-run").metrics_path)
    expected = expected_values(records)
    assert {"train/loss", "train/ppl", "train/lr", "val/loss", "val/ppl", "test/loss", "test/word_ppl"} <= set(expected)
    assert [s for s, _ in expected["train/loss"]] == [1, 2, 4, 6] and [s for s, _ in expected["val/loss"]] == [3, 6]
    assert event_values(tmp_path / "tb" / "tb-run") == expected
    ok(labkit("export", "tb-run", "--format", "tensorboard", tmp_path / "exported", cwd=tmp_path))
    assert event_values(tmp_path / "exported" / "tb-run") == expected
    refused(labkit("export", "tb-run", "--format", "tensorboard", tmp_path / "exported", cwd=tmp_path), "already exists")

    ok(labkit("finetune", "tb-run", "--task", "number", "--max-steps", "4", "--lm-steps", "0", "--eval-every", "2",
              "--log-every", "2",
              "--val-size", "20", "--device", "cpu", "--no-progress", "--name", "tb-ft", "--tensorboard", "tb",
              cwd=tmp_path))
    tuned = event_values(tmp_path / "tb" / "tb-ft")
    assert tuned == expected_values(read_metrics(RunDir(tmp_path / "runs" / "tb-ft").metrics_path))
    assert {"val/accuracy", "test/accuracy", "train/epoch"} <= set(tuned)


def test_a_failed_write_leaves_no_folder_and_no_temporary(tmp_path):
    from labkit.interop.folders import new_folder

    with pytest.raises(KeyboardInterrupt), new_folder(tmp_path / "out" / "run") as tmp:
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt  # Ctrl-C halfway
    assert list((tmp_path / "out").iterdir()) == []
    with new_folder(tmp_path / "out" / "run") as tmp:
        (tmp / "whole").write_text("x")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["run"] and (tmp_path / "out" / "run" / "whole").is_file()


# --- the app on imported runs -------------------------------------------------------------------
def test_every_app_page_opens_imported_runs(tmp_path, gpt2_tokenizer, monkeypatch):
    """The app's pages (Streamlit's AppTest) on a folder holding only imported runs: a GPT-2 folder
    and a nanoGPT ckpt.pt; each page opens them without an error, the Runs page lists both."""
    import appruns

    monkeypatch.delenv("LABKIT_RUNS", raising=False)
    hf = save_gpt2(tmp_path / "hf", gpt2_tokenizer, seed=13)
    import_checkpoint(tmp_path / "hf", tmp_path / "runs" / "gpt2-hf", corpus="synthetic")
    model_args = dict(n_layer=2, n_head=2, n_embd=16, block_size=64, bias=True, vocab_size=hf.config.vocab_size)
    torch.save({"model": nanogpt_state(hf, True, False), "model_args": model_args}, tmp_path / "ckpt.pt")
    import_checkpoint(tmp_path / "ckpt.pt", tmp_path / "runs" / "nano", tokenizer=tmp_path / "hf", corpus="synthetic")
    at = appruns.app(tmp_path / "runs", page="runs")
    assert sorted(at.dataframe[0].value["run"]) == ["gpt2-hf", "nano"]
    for page in ("start", "curves", "learn", "attention", "compare", "lens", "generate", "finetune"):
        at = appruns.app(tmp_path / "runs", page=page)
        assert not at.error, (page, [e.value for e in at.error])
