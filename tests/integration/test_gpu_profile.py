"""The notebooks' gpu profile where the bigger corpora are at hand: the medium presets on WikiText-103
and a fine-tuning LM step that reads IMDB's unlabelled reviews too; the classic presets on
WikiText-2 where they are not. (The recipes only: no GPU is needed, nothing trains.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labkit import notebook as nbk

pytestmark = pytest.mark.skipif(not os.environ.get("LABKIT_DATA"), reason="needs LABKIT_DATA (WikiText-2, SST-2)")


def data_folder(root: Path, big: bool) -> Path:
    """WikiText-2 and SST-2 from LABKIT_DATA; with `big`, a small WikiText-103 and IMDB's unlabelled
    reviews unpacked beside them (their files, as labkit unpacks the archives)."""
    root.mkdir()
    for name in ("wikitext-2", "sst2"):
        (root / name).symlink_to(Path(os.environ["LABKIT_DATA"]) / name)
    if big:
        (root / "wikitext-103").mkdir()
        for split in ("train", "valid", "test"):
            (root / "wikitext-103" / f"{split}.txt").write_text(" = Heading = \n the film was a gem . \n")
        (root / "imdb").mkdir()
        (root / "imdb" / "unsup.txt").write_text("A gem of a film .\nDull and long .\n")
    return root


@pytest.fixture
def gpu_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "gpu")
    monkeypatch.setenv("LABKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))


def test_with_wikitext103_the_gpu_profile_trains_the_medium_presets_and_reads_imdbs_reviews(tmp_path, monkeypatch,
                                                                                           gpu_profile):
    monkeypatch.setenv("LABKIT_DATA", str(data_folder(tmp_path / "data", big=True)))
    lab = nbk.start("05", sst2=True, quiet=True)
    assert lab.corpus == "wikitext-103" and lab.real_task and lab.imdb == tmp_path / "data" / "imdb"
    transformer, lstm = nbk.lm_recipe(lab, "transformer"), nbk.lm_recipe(lab, "lstm")
    assert (transformer.model.d_model, transformer.model.n_layers, transformer.train.max_steps) == (512, 6, 20_000)
    assert (lstm.model.d_hidden, lstm.model.n_layers, lstm.train.max_steps) == (650, 2, 60_000)
    assert {r.data.corpus for r in (transformer, lstm)} == {"wikitext-103"}
    assert {r.data.max_vocab for r in (transformer, lstm)} == {50_000}
    recipe = nbk.finetune_recipe(lab)
    assert (recipe.task, recipe.lm_text, recipe.lm_steps) == ("sst2", "all+unsup", nbk.IMDB_LM_STEPS)
    assert nbk.budget_recipes(lab)[1].corpus == "wikitext-103"


def test_without_it_the_gpu_profile_says_so_and_trains_the_classic_presets_on_wikitext2(tmp_path, monkeypatch,
                                                                                       gpu_profile):
    monkeypatch.setenv("LABKIT_DATA", str(data_folder(tmp_path / "data", big=False)))
    lab = nbk.start("05", sst2=True, quiet=True)
    assert lab.corpus == "wikitext-2" and lab.imdb is None
    assert any("WikiText-103 is not available" in note for note in lab.notes)
    transformer = nbk.lm_recipe(lab, "transformer")
    assert (transformer.model.d_model, transformer.model.n_layers, transformer.data.corpus) == (256, 7, "wikitext-2")
    assert nbk.finetune_recipe(lab).lm_text == "all"
