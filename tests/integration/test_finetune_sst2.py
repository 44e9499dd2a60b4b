"""Fine-tuning on an SST-2 slice, in process and through the command line."""

import re

import pytest

from labkit.errors import LabkitError, RunError
from labkit.inspect.classifier import Classifier
from labkit.train.finetune import FinetuneConfig, finetune


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
    config = FinetuneConfig(train_size=400, val_size=200, epochs=1, lm_steps=0, eval_every=5, device="cpu",
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
    # the default recipe's LM step: 200 steps for an RNN, on every SST-2 training sentence but the
    # 2,000 held out for validation (67,349 - 2,000), labels unread
    assert (card["lm_steps"], card["lm_text_sentences"]) == (200, 65_349)
    assert card["lm_val_loss_after"] < card["lm_val_loss_before"]
    done = labkit("predict", "cls", "a gorgeous film", "a dull mess")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split("\t")[2] for line in lines] == ["a gorgeous film", "a dull mess"]
    for bad in (("predict", "cls", " "), ("finetune", "cls"), ("predict", "lm", "x"),
                ("finetune", "lm", "--train-size", "0")):
        done = labkit(*bad)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert re.match(r"labkit( \w+)?: error:", done.stderr.strip().splitlines()[-1])  # a usage error names its command


@pytest.mark.integration
def test_the_words_added_for_sst2_come_from_its_training_sentences_only(labkit_data):
    from collections import Counter

    from labkit.data import WordTokenizer
    from labkit.data.corpora import wikitext2_lines
    from labkit.data.tasks import TextEncoder, task_rows, task_tokenizer

    tok = WordTokenizer.train(wikitext2_lines("train", str(labkit_data))[:4000], specials=("<unk>", "<pad>", "<eos>"))
    encode = TextEncoder(tok)
    train, val, test = task_rows("sst2", labkit_data, 2000)

    def unknown(rows) -> Counter:
        return Counter(w for sentence, _ in rows for w in encode.text(sentence).split() if w not in tok.vocab)

    in_train, elsewhere = unknown(train), unknown(val) + unknown(test)
    never_in_train = {w for w in elsewhere if w not in in_train}
    assert len(never_in_train) > 50  # the held-out and dev sentences have words of their own
    grown = task_tokenizer("sst2", tok, 1, data_dir=labkit_data)  # every unknown training word, however rare
    added = set(grown.vocab.itos[tok.vocab_size:])
    assert added == set(in_train) and not added & never_in_train
    assert set(task_tokenizer("sst2", tok, 5, data_dir=labkit_data).vocab.itos[tok.vocab_size:]) == \
        {w for w, n in in_train.items() if n >= 5}
