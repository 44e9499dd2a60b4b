"""labkit.exercises: every exercise's reference passes its check and its stub is "not done yet";
the stub, solution and check cells run as they are; check() prints and records its verdict;
hints and solutions show only when asked; the cells fit the six notebooks. The typical mistakes
of every exercise are in test_exercise_mistakes.py."""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from pathlib import Path

import nbformat
import pytest
import torch

from labkit.exercises import EXERCISES, Mistake, cells, check, evaluate, hint, names, solution, with_exercises
from labkit.exercises.core import expect

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = {p.name[:2]: p for p in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))}


def run_cell(source: str, namespace: dict) -> str:
    """Execute a cell's source in `namespace`; what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<cell>", "exec"), namespace)
    return out.getvalue()


def test_at_least_three_exercises_per_notebook_and_the_ones_the_course_needs():
    assert sorted({EXERCISES[n].notebook for n in names()}) == ["01", "02", "03", "04", "05", "06"]
    assert all(len(names(nb)) >= 3 for nb in ("01", "02", "03", "04", "05", "06"))
    assert {"01.perplexity", "01.vocab", "01.bptt", "01.bpe_merge", "02.rnn_step", "02.lstm_cell", "02.tbptt",
            "02.sampling", "03.attention", "03.split_heads", "03.merge_heads", "03.block", "03.kv_cache", "04.strided",
            "05.mean_pool", "05.slanted", "06.ablate_head"} <= set(EXERCISES)
    assert names("03_transformer_language_model.ipynb") == names("03")


@pytest.mark.parametrize("name", list(EXERCISES))
def test_the_reference_passes_and_the_stub_is_not_done_yet(name):
    exercise = EXERCISES[name]
    start = time.perf_counter()
    result = evaluate(name, exercise.reference)
    took = time.perf_counter() - start
    assert result.status == "passed", result.message
    assert took < 5, f"{name}'s check took {took:.1f} s"  # well under a second on a quiet machine
    stub_cell, check_cell = next((c.stub, c.check) for c in cells(exercise.notebook) if c.name == name)
    namespace: dict = {}
    assert run_cell(stub_cell, namespace) == ""  # defines the function, runs nothing
    with pytest.raises(NotImplementedError, match=f"{name} is not done yet.*hint"):
        namespace[exercise.function](*[None] * exercise.reference.__code__.co_argcount)
    printed = run_cell(check_cell, namespace)  # the check cell on the unfinished stub: a verdict, no error
    assert printed.startswith(f"… {name}: not done yet")
    solved: dict = {}
    run_cell(f"{exercise.imports}\n\n{exercise.solution_source()}", solved)  # the printed solution, pasted
    assert run_cell(check_cell, solved).startswith(f"✓ {name}: passed")


def test_the_stub_keeps_the_signature_and_docstring_but_not_the_answer():
    stub = EXERCISES["01.perplexity"].stub()
    assert "def perplexity(token_probs: list[float]) -> float:" in stub and "By the chain rule" in stub
    assert "math.exp" not in stub.split('"""')[-1]  # the body is the NotImplementedError only
    assert stub.startswith("import math\n")


def test_check_prints_the_verdict_and_records_it_for_the_grader(tmp_path, monkeypatch, capsys):
    grade_file = tmp_path / "checks.jsonl"
    monkeypatch.delenv("LABKIT_GRADE_FILE", raising=False)
    check("01.perplexity", EXERCISES["01.perplexity"].reference)
    assert capsys.readouterr().out.startswith("✓ 01.perplexity: passed (4 cases)")
    assert not grade_file.exists()
    monkeypatch.setenv("LABKIT_GRADE_FILE", str(grade_file))
    check("01.perplexity", lambda probs: 2.0)
    assert capsys.readouterr().out.startswith("✗ 01.perplexity: perplexity([0.1, 0.1, ")  # 2 is right for the first two
    check("01.perplexity", EXERCISES["01.perplexity"].reference)
    lines = [json.loads(line) for line in grade_file.read_text().splitlines()]
    assert [(r["exercise"], r["status"]) for r in lines] == [("01.perplexity", "failed"), ("01.perplexity", "passed")]
    assert "expected 10" in lines[0]["message"] and "got 2" in lines[0]["message"]  # the uniform guess over 10


def test_a_function_that_raises_is_a_verdict_that_says_where(monkeypatch):
    def broken(probs):
        return sum(probs) / 0

    result = evaluate("01.perplexity", broken)
    assert result.status == "failed"
    assert "your function raised ZeroDivisionError: float division by zero" in result.message
    assert "at: return sum(probs) / 0" in result.message
    assert "check needs your function itself" in evaluate("01.perplexity", 3.0).message

    odd = evaluate("03.attention", lambda q, k, v: (q, torch.zeros(1, 1)))  # weights too small to read from
    assert odd.status == "failed" and odd.message.startswith("your function's answer could not be checked (IndexError")
    with pytest.raises(KeyError, match="no exercise '01.perplexity_x'.*01.perplexity"):
        evaluate("01.perplexity_x", broken)


def test_hints_and_solutions_show_only_when_asked(capsys):
    exercise = EXERCISES["03.attention"]
    for c in cells("03"):
        assert exercise.hint not in c.markdown + c.stub + c.check
        assert "masked_fill" not in c.markdown + c.stub
    hint("03.attention")
    assert capsys.readouterr().out == f"Hint for 03.attention:\n{exercise.hint}\n"
    solution("03.attention")
    shown = capsys.readouterr().out
    assert "def causal_attention(" in shown and "masked_fill" in shown and shown.startswith("# The solution of 03.attention")


def test_expect_names_both_values_and_the_mistake_and_computes_mistakes_only_when_wrong():
    calls = []

    def costly():
        calls.append(1)
        return 4.0

    expect(2.0, 2.0, what="x", known={"never": costly})
    assert not calls
    with pytest.raises(Mistake) as wrong:
        expect(4.0, 2.0, what="perplexity([0.5, 0.5])", known={"summed": costly, "other": 5.0})
    assert str(wrong.value) == "perplexity([0.5, 0.5]): expected 2\ngot 4\nLikely mistake: summed"
    with pytest.raises(Mistake, match="got 7$"):
        expect(7.0, 2.0, what="x", known={"summed": 4.0})


@pytest.mark.parametrize("number", ["01", "02", "03", "04", "05", "06"])
def test_the_cells_go_into_their_notebook_at_the_end_of_their_section(number):
    nb = nbformat.read(NOTEBOOKS[number], as_version=4)
    headings = {"".join(c.source).split("\n", 1)[0].strip() for c in nb.cells if c.cell_type == "markdown"}
    listed = cells(number)
    assert {c.after for c in listed} <= headings
    out = nbformat.from_dict(with_exercises(nb, number))
    nbformat.validate(out)
    present = sum(c.get("id", "").startswith("exercise-") for c in nb.cells)  # once the notebook holds them
    assert len(out.cells) == len(nb.cells) + 3 * len(listed) - present
    assert with_exercises(out, number) == out  # inserting twice changes nothing
    for c in listed:
        i = next(i for i, cell in enumerate(out.cells) if cell.source == c.markdown)
        assert [out.cells[i + 1].source, out.cells[i + 2].source] == [c.stub, c.check]
        assert out.cells[i + 1].cell_type == out.cells[i + 2].cell_type == "code"
        before = next(cell.source for cell in reversed(out.cells[:i]) if cell.cell_type == "markdown"
                      and cell.source.startswith("#") and not cell.source.startswith("### Exercise"))
        assert before.split("\n", 1)[0].strip() == c.after  # the last heading above it is its section's
        after = out.cells[i + 3] if i + 3 < len(out.cells) else None  # next: another exercise, a heading, or the end
        assert after is None or after.cell_type == "markdown" and after.source.startswith("#")
    assert nb.cells == nbformat.read(NOTEBOOKS[number], as_version=4).cells  # the notebook read is left as it was


def test_the_references_agree_with_answers_worked_out_by_hand():
    """The checks compare with the references (and with labkit): here the references meet numbers
    computed by hand, so that a wrong reference cannot make a wrong answer pass."""
    from labkit.exercises import attention, compare, data, finetune, heads, rnn

    assert [data.perplexity(p) for p in ([0.5, 0.5], [0.25, 0.5, 1.0], [0.1] * 10)] == pytest.approx([2, 2, 10])
    text = "the cat sat on the mat . the dog sat on the log . <eos> a cat ran".split()
    assert data.make_vocab(text, 2) == ["<unk>", "<eos>", "the", "cat", "sat", "on", "."]
    x, y = data.bptt_batches(torch.arange(26), 2, 5)[-1]  # rows 0..12 and 13..25; the last window is 2 long
    assert x.tolist() == [[10, 11], [23, 24]] and y.tolist() == [[11, 12], [24, 25]]
    words = {tuple("l o w </w>".split()): 5, tuple("l o w e r </w>".split()): 2,
             tuple("n e w e s t </w>".split()): 6, tuple("w i d e s t </w>".split()): 3}
    pair, merged = data.bpe_merge(words)
    assert pair == ("e", "s")  # 9 times, tied with (s, t) and (t, </w>), and seen first
    assert merged[("n", "e", "w", "es", "t", "</w>")] == 6 and merged[("w", "i", "d", "es", "t", "</w>")] == 3
    assert data.bpe_merge({("a", "a", "a"): 3})[1] == {("aa", "a"): 3}
    one = torch.tensor([[1.0]])
    assert float(rnn.rnn_step(one, one / 2, 2 * one, -one, torch.tensor([0.25]))) == pytest.approx(math.tanh(1.75))
    Q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]])
    V = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [10.0, 10.0]])
    out, w = attention.causal_attention(Q, Q, V)
    assert out[0].tolist() == [1.0, 0.0] and w[:3, 3].abs().max() == 0 and out[:3].max() <= 1.0  # the loud value stays out
    assert w[1].tolist() == pytest.approx([1 / (1 + math.exp(1 / math.sqrt(2))), 1 / (1 + math.exp(-1 / math.sqrt(2))), 0, 0])
    assert attention.split_heads(torch.arange(24.0).view(1, 3, 8), 2)[0, 1, 2].tolist() == [20, 21, 22, 23]
    assert attention.merge_heads(torch.arange(24.0).view(1, 2, 3, 4))[0, 0].tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    assert compare.bigram_perplexity([0, 1, 0, 1, 2], [0, 1, 2], 3, 1.0) == pytest.approx(0.24 ** -0.5)
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    assert compare.surprisal_bits(logits, torch.tensor([0, 1, 1])).tolist() == pytest.approx([1, 2, 1])
    hidden, mask = finetune.padded_batch()
    assert finetune.masked_mean(hidden, mask).tolist() == [[2.0, 2.0], [3.0, 2.0], [1.0, 1.0]]
    assert finetune.concat_pool(hidden, mask)[1].tolist() == [4.0, 6.0, 4.0, 6.0, 3.0, 2.0]  # last, max, mean
    assert [finetune.slanted_triangular(s, 20, 1.0, 4) for s in (0, 3, 4, 12, 20, 25)] == \
        pytest.approx([0.25, 1.0, 1.0, 0.55, 0.1, 0.1])
    previous, even = heads.head_patterns()[:2]
    assert heads.previous_token_score(previous) == 1.0
    assert heads.previous_token_score(even) == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)
    assert heads.attention_entropy(previous) == 0.0
    assert heads.attention_entropy(even) == pytest.approx((math.log(2) + math.log(3) + math.log(4)) / 3)
