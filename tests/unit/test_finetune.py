"""Fine-tuning: normalisation, the classifier head, freezing, and the whole path on SST-2."""

import pytest
import torch
from torch.nn import functional as F

from labkit.data import Vocab
from labkit.data.batching import pad_batch
from labkit.data.normalize import CaseMapper, sst_to_wikitext
from labkit.data.tasks import TaskData
from labkit.models import RNNConfig, TransformerConfig
from labkit.train.finetune import FinetuneConfig, build_classifier, finetuner

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
    # SST's opening single quote (940 training tokens) is WikiText's "'"; a backtick inside a word stays
    assert sst_to_wikitext("` right ' , he said of it`s") == "' right ' , he said of it`s"


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


def pooled(model, sentences: list[list[int]]) -> torch.Tensor:
    """The model's pooled features (N, D) of the sentences, in one padded batch."""
    ids, _, mask = pad_batch(sentences, pad_id=0)
    with torch.no_grad():
        return model.features(ids, mask)


def test_a_frozen_body_trains_its_head_to_what_a_linear_probe_reads():
    """The frozen body's pooled features are far from zero and of very different scales (its final
    LayerNorm shifted and stretched); the label is a linear function of them. Standardised, the
    head reaches what a logistic regression on the same features reaches (the recipe before read
    them raw and stayed near one answer)."""
    torch.manual_seed(0)
    config = FinetuneConfig(mode="frozen", epochs=10, eval_every=1000, patience=100, device="cpu")
    model = build_classifier(body_config("transformer"), config).eval()
    with torch.no_grad():
        model.body.ln_f.bias.copy_(torch.linspace(-40, 40, 16))
        model.body.ln_f.weight.copy_(torch.logspace(-2, 1, 16))
    g = torch.Generator().manual_seed(0)
    sentences = [torch.randint(10, V, (int(torch.randint(4, 12, (1,), generator=g)),), generator=g).tolist()
                 for _ in range(1200)]
    x = pooled(model, sentences)  # (N, 48)
    z = (x - x.mean(0)) / x.std(0)
    labels = (z @ torch.randn(48, generator=torch.Generator().manual_seed(1)) > 0).long().tolist()
    rows = list(zip(sentences, labels))
    task = TaskData(rows[:600], rows[600:800], rows[800:], ("neg", "pos"), 0.0)
    assert 0.3 < sum(labels[800:]) / 400 < 0.7  # both labels common: one answer would score near 50%

    # the probe: logistic regression (with a bias) on the training sentences' standardised features
    train_z, test_z = z[:600], z[800:]
    w, b = torch.zeros(48, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")
    y = torch.tensor(labels[:600], dtype=torch.float)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(train_z @ w + b, y) + 1e-3 * (w ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    probe_accuracy = float(((test_z @ w + b > 0).long() == torch.tensor(labels[800:])).float().mean())
    assert probe_accuracy > 0.9

    card = finetuner(model.train(), task, config).fit()
    assert card["accuracy"] >= probe_accuracy - 0.03, (card["accuracy"], probe_accuracy)
    predicted = [sum(row[j] for row in card["confusion_matrix"]) for j in range(2)]
    assert min(predicted) > 100  # both labels, in about the true proportions
