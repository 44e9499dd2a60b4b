"""Fine-tuning: normalisation, the classifier head, freezing, and the whole path on SST-2."""

import pytest
import torch

from labkit.data import Vocab
from labkit.data.normalize import CaseMapper, sst_to_wikitext
from labkit.data.tasks import TaskData
from labkit.errors import LabkitError, RunError
from labkit.inspect.classifier import Classifier
from labkit.models import RNNConfig, TransformerConfig
from labkit.train.finetune import FinetuneConfig, build_classifier, finetune, finetuner

V = 40


def body_config(family: str) -> dict:
    if family == "rnn":
        return RNNConfig(vocab_size=V, d_embed=16, d_hidden=16, n_layers=2, dropout=0.0).to_dict()
    return TransformerConfig(vocab_size=V, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                             context_length=16, dropout=0.0).to_dict()


def separable(n: int, seed: int) -> list[tuple[list[int], int]]:
    """Random filler words 10..39; the label is whether token 3 or token 4 occurs."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        label = int(torch.randint(2, (1,), generator=g))
        ids = torch.randint(10, V, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
        ids.insert(int(torch.randint(len(ids), (1,), generator=g)), 3 + label)
        out.append((ids, label))
    return out


def toy_task() -> TaskData:
    return TaskData(separable(600, 0), separable(100, 1), separable(200, 2), ("neg", "pos"), 0.0)


def test_sst_text_is_rewritten_in_wikitext_conventions():
    assert sst_to_wikitext("it does n't work") == "it doesn 't work"
    assert sst_to_wikitext("ca n't and wo n't") == "can 't and won 't"
    assert sst_to_wikitext("a heavy-handed `` epic '' -lrb- 2.5 stars , 1,000 -rrb-") == \
        'a heavy @-@ handed " epic " ( 2 @.@ 5 stars , 1 @,@ 000 )'


def test_case_mapper_prefers_the_most_frequent_casing():
    vocab = Vocab(["<unk>", "the", "Paris", "The", "paris", "Rome"])
    case = CaseMapper(vocab)
    assert case.sentence("the paris rome zzz") == "the paris Rome zzz"
    assert CaseMapper(Vocab(["<unk>", "Paris"]))("paris") == "Paris"


@pytest.mark.parametrize("family", ["rnn", "transformer"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_padding_does_not_change_the_prediction(family, pooling):
    torch.manual_seed(0)
    model = build_classifier(body_config(family), FinetuneConfig(pooling=pooling, dropout=0.0)).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[5, 6, 7, 8, 0, 0, 0]])
    mask = padded != 0
    torch.testing.assert_close(model(ids, torch.ones_like(ids, dtype=torch.bool)), model(padded, mask))
    if pooling == "last":  # the pooled vector is the hidden state of the last real token
        hidden, _ = model.body.encode(ids)
        torch.testing.assert_close(model(padded, mask), model.head(hidden[:, -1]))


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_learns_a_separable_task_well_above_chance(family):
    torch.manual_seed(0)
    config = FinetuneConfig(epochs=8, batch_size=32, eval_every=20, lr_body=3e-3, lr_head=1e-2,
                            device="cpu", patience=20)
    model = build_classifier(body_config(family), config)
    card = finetuner(model, toy_task(), config).fit()
    assert card["accuracy"] > 0.9
    assert sum(map(sum, card["confusion_matrix"])) == 200
    assert set(card["precision"]) == {"neg", "pos"}


def test_frozen_mode_leaves_the_body_untouched_and_trains_the_head():
    torch.manual_seed(0)
    config = FinetuneConfig(mode="frozen", epochs=1, eval_every=5, device="cpu")
    model = build_classifier(body_config("rnn"), config)
    body_before = {k: v.clone() for k, v in model.body.state_dict().items()}
    head_before = model.head.weight.clone()
    finetuner(model, toy_task(), config).fit()
    for k, v in model.body.state_dict().items():
        assert torch.equal(v, body_before[k]), k
    assert not torch.equal(model.head.weight, head_before)


def test_gradual_unfreezing_opens_one_group_per_epoch():
    torch.manual_seed(0)
    config = FinetuneConfig(mode="gradual", device="cpu")
    model = build_classifier(body_config("transformer"), config)
    tuner = finetuner(model, toy_task(), config)
    groups = model.layer_groups()
    assert len(groups) == 3  # top block with the final norm, the block below, the embeddings
    for epoch in range(len(groups) + 1):
        tuner.objective._set_trainable(model, epoch)
        opened = [all(p.requires_grad for p in g) for g in groups]
        assert opened == [k < epoch for k in range(len(groups))]


# --- through the real data and the CLI path ------------------------------------------------
@pytest.mark.integration
def test_finetune_a_tiny_pretrained_lstm_on_an_sst2_slice(labkit_data, tmp_path):
    from labkit.data import DataConfig
    from labkit.models import RNNConfig as R
    from labkit.train import TrainConfig
    from labkit.train.pretrain import pretrain

    pretrain(R(d_embed=32, d_hidden=32, n_layers=1, dropout=0.0, tie_weights=True),
             TrainConfig(max_steps=20, batch_size=8, seq_len=32, eval_every=20, device="cpu"),
             DataConfig(data_dir=str(labkit_data), max_vocab=3000, train_tokens=20_000,
                        eval_tokens=2_000), tmp_path / "lm")
    config = FinetuneConfig(train_size=400, val_size=200, epochs=1, eval_every=5, device="cpu",
                            data_dir=str(labkit_data))
    card = finetune(tmp_path / "lm", config, tmp_path / "cls")
    assert card["train_size"] == 400 and card["status"] == "finished"
    assert sum(map(sum, card["confusion_matrix"])) == 872  # all of SST-2 dev
    assert 0.0 < card["oov_rate"] < 0.5
    clf = Classifier(tmp_path / "cls")
    pred = clf.predict("a gorgeous , witty , seductive movie .")
    assert pred.label in ("negative", "positive") and 0.5 <= pred.prob <= 1.0
    assert sum(pred.probs.values()) == pytest.approx(1.0)
    with pytest.raises(LabkitError, match="empty"):
        clf.predict("   ")
    with pytest.raises(RunError, match="not a language-model run"):
        finetune(tmp_path / "cls", config, tmp_path / "cls2")
    with pytest.raises(RunError, match="not a fine-tuned classifier"):
        Classifier(tmp_path / "lm")


@pytest.mark.integration
def test_finetune_and_predict_through_the_cli(labkit_data, tmp_path):
    import subprocess
    import sys

    env = {**__import__("os").environ, "LABKIT_DATA": str(labkit_data), "OMP_NUM_THREADS": "1"}

    def labkit(*args):
        return subprocess.run([sys.executable, "-m", "labkit", *args, "--runs-dir", str(tmp_path)],
                              capture_output=True, text=True, env=env, timeout=300)

    done = labkit("pretrain", "--preset", "tiny", "--name", "lm", "--steps", "4", "--eval-every", "4",
                  "--train-tokens", "5000", "--eval-tokens", "1000", "--no-progress")
    assert done.returncode == 0, done.stderr
    done = labkit("finetune", "lm", "--train-size", "200", "--epochs", "1", "--eval-every", "4",
                  "--mode", "frozen", "--name", "cls")
    assert done.returncode == 0, done.stderr
    assert "sst2 dev accuracy" in done.stdout
    card = __import__("json").loads((tmp_path / "cls" / "card.json").read_text())
    assert card["mode"] == "frozen" and card["train_size"] == 200
    done = labkit("predict", "cls", "a gorgeous film", "a dull mess")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split("\t")[2] for line in lines] == ["a gorgeous film", "a dull mess"]
    for bad in (("predict", "cls", " "), ("finetune", "cls"), ("predict", "lm", "x"),
                ("finetune", "lm", "--train-size", "0")):
        done = labkit(*bad)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("labkit: error:")


def test_text_encoder_handles_word_and_bpe_tokenizers():
    from labkit.data import BPETokenizer, WordTokenizer
    from labkit.data.tasks import TextEncoder

    lines = ["The film doesn 't work , but Paris is \" lovely \" ."] * 20
    word = TextEncoder(WordTokenizer.train(lines, split="whitespace", specials=("<unk>", "<eos>")))
    ids = word("the film does n't work , but paris is `` lovely '' .")
    assert word.tokenizer.unk_id not in ids  # normalised and case-mapped onto the vocabulary
    bpe = TextEncoder(BPETokenizer.train(lines, vocab_size=300))
    ids = bpe("the film does n't work")
    assert ids and bpe.tokenizer.unk_id not in ids  # byte-level: nothing is out of vocabulary
