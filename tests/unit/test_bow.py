"""The bag-of-words yardstick (labkit.models.bow, labkit.train.bow): on tasks whose answer is known
in advance, it learns which words go with which label and nothing about their order."""

from __future__ import annotations

import torch

from labkit.data import WordTokenizer
from labkit.data.batching import pad_batch
from labkit.data.tasks import TaskData
from labkit.inspect.classifier import Classifier, condition
from labkit.models.bow import BagOfWords, BagOfWordsConfig
from labkit.runs import load_run
from labkit.train import bow
from labkit.train.finetune import FinetuneConfig

SETTINGS = FinetuneConfig(task="number").to_dict() | {"task": "toy"}  # what the config records (max_len, ...)
WORDS = ["<unk>", "<eos>", "<pad>", "good", "bad", "not"] + [f"w{i}" for i in range(30)]


def tokenizer() -> WordTokenizer:
    return WordTokenizer.train([" ".join(WORDS)], split="whitespace", specials=("<unk>", "<eos>", "<pad>"))


def rows(n: int, seed: int, rule: str) -> list[tuple[list[int], int]]:
    """Filler words w0..w29 and "good" / "bad": the label says which one occurs ("which"); or
    "good" and "not" both occur and the label is their order ("order": not good / good not)."""
    tok, g = tokenizer(), torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        label = int(torch.randint(2, (1,), generator=g))
        filler = [f"w{int(i)}" for i in torch.randint(30, (int(torch.randint(2, 8, (1,), generator=g)),), generator=g)]
        key = (["bad", "good"][label],) if rule == "which" else (("not", "good") if label else ("good", "not"))
        at = int(torch.randint(len(filler) + 1, (1,), generator=g))
        out.append((tok.encode(" ".join(filler[:at] + list(key) + filler[at:])), label))
    return out


def task(rule: str) -> TaskData:
    return TaskData(rows(300, 0, rule), rows(100, 1, rule), rows(200, 2, rule), ("neg", "pos"), 0.0)


def test_which_words_it_learns_perfectly_their_order_not_at_all(tmp_path):
    tok = tokenizer()
    card = bow.fit_bow(task("which"), tok, tmp_path / "which", settings=SETTINGS)
    assert card["accuracy"] == 1.0 and card["val_accuracy"] == 1.0 and card["baseline"] == "bow"
    assert card["l2"] in bow.L2 and set(card["l2_tried"]) == {f"{l2:g}" for l2 in bow.L2}
    # the same words in both labels, only their order differs: a bag of words is at chance
    order = bow.fit_bow(task("order"), tok, tmp_path / "order", settings=SETTINGS)
    assert abs(order["accuracy"] - 0.5) < 0.1
    assert sum(order["confusion_matrix"][0]) + sum(order["confusion_matrix"][1]) == 200


def test_the_model_reads_presence_not_counts_and_ignores_padding():
    model = BagOfWords(BagOfWordsConfig(vocab_size=5, n_classes=2))
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [5.0, 5.0]]))
        model.bias.copy_(torch.tensor([0.5, -0.5]))
    ids, _, mask = pad_batch([[1, 1, 2], [2], [1, 2, 2, 2]], pad_id=4)  # word 4 is the padding: never counted
    logits = model(ids, mask)
    assert logits.tolist() == [[1.5, 1.5], [0.5, 1.5], [1.5, 1.5]]  # word 1 once however often it occurs


def test_the_fitted_run_loads_predicts_and_reads_as_its_own_condition(tmp_path):
    card = bow.fit_bow(task("which"), tokenizer(), tmp_path / "r", settings=SETTINGS)
    loaded = load_run(tmp_path / "r")
    assert isinstance(loaded.model, BagOfWords) and loaded.config["finetune"]["baseline"] == "bow"
    assert condition(card, loaded.config) == "bag of words"
    clf = Classifier(tmp_path / "r")
    assert clf.predict("w3 good w7").label == "pos" and clf.predict("bad w1").label == "neg"
    assert clf.tokens("w3 good zzz") == ["w3", "good", "<unk>"]  # what it reads, a word it lacks as <unk>
