"""The `labkit` command line, run for real in subprocesses on slices of WikiText-2.

Two tiny runs (an LSTM and a Transformer) are trained once for the module; the other tests
evaluate, sample, list, resume, interrupt and break them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

QUICK = ["--steps", "6", "--eval-every", "3", "--train-tokens", "20000", "--eval-tokens", "2000",
         "--no-progress"]


def environment(**changes: str) -> dict[str, str]:
    # One thread per process: these models are tiny, and on a busy 2-core machine two
    # OpenMP threads per process can make each LSTM call 100x slower.
    return {"OMP_NUM_THREADS": "1", **os.environ, **changes}


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labkit", *args], cwd=cwd,
                            env=env or environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def labkit_all(*commands: list[str], cwd: Path, env: dict[str, str] | None = None,
               timeout: float = 180) -> list[subprocess.CompletedProcess]:
    """Run independent `labkit` commands side by side (most of their time is start-up)."""
    return finish([start(*command, cwd=cwd, env=env) for command in commands], timeout)


def finish(procs: list[subprocess.Popen],
           timeout: float = 180) -> list[subprocess.CompletedProcess]:
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def labkit(*args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 180) -> subprocess.CompletedProcess:
    return labkit_all(list(args), cwd=cwd, env=env, timeout=timeout)[0]


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def assert_user_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit code 2 and exactly one line on stderr: `labkit: error: ...`, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("labkit: error:"), result.stderr
    for word in words:
        assert word in lines[0]


def card(run: Path) -> dict:
    return json.loads((run / "card.json").read_text())


def metrics(run: Path) -> list[dict]:
    text = (run / "metrics.jsonl").read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]  # every line a whole JSON object


def assert_steps_increase(records: list[dict]) -> None:
    """Per kind of record (training, validation, test): steps strictly increasing."""
    for key in ("loss", "val_loss", "test_loss"):
        steps = [r["step"] for r in records if key in r]
        assert steps, key
        assert all(a < b for a, b in zip(steps, steps[1:])), (key, steps)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, labkit_data: Path) -> Path:
    """A working directory holding runs/lstm and runs/tf, trained for 6 steps each."""
    cwd = tmp_path_factory.mktemp("cli")
    names = {"lstm": "lstm", "tf": "transformer"}
    results = labkit_all(*(["pretrain", "--preset", "tiny", "--model", model, "--name", name,
                            *QUICK] for name, model in names.items()), cwd=cwd)
    for name, result in zip(names, results):
        ok(result)
        assert str(cwd / "runs" / name) in result.stdout  # the run directory, at the start
        assert "test ppl" in result.stdout and "tokens/s" in result.stdout  # the summary
    return cwd


@pytest.mark.integration
@pytest.mark.parametrize("name", ["lstm", "tf"])
def test_pretrain_writes_a_complete_run(work: Path, name: str) -> None:
    run = work / "runs" / name
    for part in ("config.json", "tokenizer.json", "model.safetensors", "metrics.jsonl"):
        assert (run / part).is_file(), part
    checkpoints = sorted(run.glob("checkpoints/step-*"))
    assert checkpoints and (checkpoints[-1] / "state.pt").is_file()
    assert (checkpoints[-1] / "model.safetensors").is_file()
    c = card(run)
    assert c["status"] == "finished" and c["steps"] >= 6 and c["test_ppl"] > 1
    assert_steps_increase(metrics(run))
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["train_tokens"] == 20_000 and config["train"]["eval_every"] == 3
    from labkit.inspect.timeline import read_timeline

    snapshots = read_timeline(run)  # `labkit pretrain` attaches the timeline recorder
    if name == "tf":  # a snapshot of the heads at each evaluation
        assert [s.step for s in snapshots] == [r["step"] for r in metrics(run) if "val_loss" in r]
        assert snapshots[-1].attention is not None and "induction" in snapshots[-1].head_stats
    else:
        assert snapshots == []  # an LSTM on real text has nothing to record


@pytest.mark.integration
def test_eval_prints_loss_and_perplexities(work: Path) -> None:
    lstm, tf = labkit_all(["eval", "lstm", "--which", "last"],
                          ["eval", str(work / "runs" / "tf"), "--split", "test"], cwd=work)
    out = ok(lstm).stdout
    assert "valid" in out and "last" in out and "loss" in out and "word ppl" in out
    out = ok(tf).stdout  # the best weights on test: what the card reports
    assert "test" in out
    ppl = float(out.split(" ppl ")[1].split()[0])
    assert ppl == pytest.approx(card(work / "runs" / "tf")["test_ppl"], rel=1e-3)


@pytest.mark.integration
def test_generate_is_seeded_streams_and_flags_unknown_words(work: Path) -> None:
    args = ["generate", "lstm", "--prompt", "The game xyzzyq", "--seed", "7", "--top-k", "50",
            "--max-tokens", "12"]
    first, second = map(ok, labkit_all(args, [*args, "--no-stream"], cwd=work))
    assert first.stdout == second.stdout and len(first.stdout.split()) > 0
    assert "note: mapped to <unk>: xyzzyq" in first.stderr
    assert "tokens/s" in first.stderr.splitlines()[-1]


@pytest.mark.integration
def test_generate_from_an_empty_prompt(work: Path) -> None:
    result = ok(labkit("generate", "tf", "--prompt", "", "--max-tokens", "5", "--seed", "1",
                       "--no-cache", cwd=work))
    assert "note: empty prompt" in result.stderr


@pytest.mark.integration
def test_generate_cuts_a_very_long_prompt(work: Path) -> None:
    prompt = work / "long.txt"
    prompt.write_text("the " * 100_000)
    for result in labkit_all(*(["generate", run, "--prompt-file", str(prompt), "--max-tokens",
                                "3", "--seed", "0"] for run in ("lstm", "tf")), cwd=work):
        ok(result)
        assert "note: prompt of 100" in result.stderr and "cut to the last" in result.stderr


@pytest.mark.integration
def test_runs_lists_every_run(work: Path, tmp_path: Path) -> None:
    (work / "runs" / "junk").mkdir(exist_ok=True)  # a folder that is not a run
    listed, empty = map(ok, labkit_all(["runs"], ["runs", "--runs-dir", str(tmp_path / "none")],
                                       cwd=work))
    lines = listed.stdout.splitlines()
    assert "best val ppl" in lines[0] and "test ppl" in lines[0] and "status" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert {"lstm", "transformer", "finished"} <= set(rows["lstm"]) | set(rows["tf"])
    assert "unreadable" in rows["junk"]
    assert any(line.startswith("junk: ") and "config.json" in line for line in lines)
    # six steps on WikiText-2 learn less than word counts: the table says so under it, as the app does
    assert any(line.startswith("note: lstm has not learned enough") and "unigram" in line for line in lines)
    assert "no runs" in empty.stdout and "labkit pretrain" in empty.stdout


@pytest.mark.integration
def test_resume_with_more_steps_continues_from_the_checkpoint(work: Path) -> None:
    run = work / "runs" / "lstm"
    before = card(run)["steps"]
    ok(labkit("pretrain", "--name", "lstm", "--resume", "--steps", str(before + 6),
              "--no-progress", cwd=work))
    after = card(run)
    assert after["status"] == "finished" and after["steps"] == before + 6
    assert after["tokens_seen"] > before * 16 * 32
    assert_steps_increase(metrics(run))
    # Finished and no longer --steps: nothing to do, said plainly; and the model cannot change.
    again, lr = labkit_all(["pretrain", "--name", "lstm", "--resume"],
                           ["pretrain", "--name", "lstm", "--resume", "--lr", "1"], cwd=work)
    assert_user_error(again, "--steps")
    assert_user_error(lr, "--lr")


@pytest.mark.integration
@pytest.mark.parametrize("flag", ["--corpus", "--data"])
def test_init_from_adapts_a_run_to_a_text_file(work: Path, flag: str) -> None:
    corpus = work / "notes.txt"
    corpus.write_text("".join(f"the cat sat on mat number {i} .\n" for i in range(300)))
    shutil.rmtree(work / "runs" / "adapted", ignore_errors=True)
    result = ok(labkit("pretrain", "--init-from", "tf", flag, str(corpus), "--epochs", "1",
                       "--name", "adapted", "--no-progress", cwd=work))
    assert "one epoch is" in result.stderr
    config = json.loads((work / "runs" / "adapted" / "config.json").read_text())
    assert config["init_from"] and config["data"]["corpus"] == str(corpus)
    assert card(work / "runs" / "adapted")["status"] == "finished"
    assert (work / "runs" / "adapted" / "tokenizer.json").read_text() == \
        (work / "runs" / "tf" / "tokenizer.json").read_text()


def broken_copy(work: Path, name: str, breaks: str) -> str:
    run = work / "runs" / name
    if not run.exists():
        shutil.copytree(work / "runs" / "lstm", run)
        if breaks == "weights":
            (run / "model.safetensors").write_bytes(os.urandom(4096))
        else:  # a config.json that no longer matches the weights
            config = json.loads((run / "config.json").read_text())
            config["model"]["d_hidden"] = config["model"]["d_embed"] = 32
            (run / "config.json").write_text(json.dumps(config))
    return name


@pytest.mark.integration
def test_user_mistakes_are_one_line_and_exit_2(work: Path, tmp_path: Path) -> None:
    no_data = environment(LABKIT_OFFLINE="1", LABKIT_CACHE=str(tmp_path / "cache"))
    del no_data["LABKIT_DATA"]
    cases = {  # name: (arguments, words the message must hold, environment)
        "unknown preset": (["pretrain", "--preset", "huge"], ["huge"], None),
        "bad top-p": (["generate", "lstm", "--top-p", "1.5"], ["top_p"], None),
        "no such run": (["eval", "no-such-run"], ["no-such-run"], None),
        "not a run": (["generate", str(tmp_path)], ["config.json"], None),
        "corrupt weights": (["generate", broken_copy(work, "corrupt", "weights")], ["corrupt"],
                            None),
        "config mismatch": (["eval", broken_copy(work, "mismatch", "config")],
                            ["does not match"], None),
        "escaping name": (["pretrain", "--name", "../escape", *QUICK], ["invalid run name"], None),
        "missing data": (["pretrain", "--name", "no-data", *QUICK], ["not found"], no_data),
    }
    results = finish([start(*args, cwd=work, env=env) for args, _, env in cases.values()])
    for (name, (_, words, _)), result in zip(cases.items(), results):
        try:
            assert_user_error(result, *words)
        except AssertionError as e:
            raise AssertionError(f"case {name!r}: {e}") from None
    assert not (work / "escape").exists()


def test_bad_flag_values_are_usage_errors(tmp_path: Path) -> None:
    for result in labkit_all(["pretrain", "--model", "cnn"], ["pretrain", "--time-budget", "soon"],
                             cwd=tmp_path):
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "labkit pretrain: error:" in result.stderr


@pytest.mark.integration
def test_nan_loss_exits_1_with_the_reason(work: Path) -> None:
    result = labkit("pretrain", "--model", "transformer", "--lr", "1e38", "--name", "nan",
                    *QUICK, cwd=work)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "labkit: error: the loss became nan" in result.stderr
    assert card(work / "runs" / "nan")["status"] == "failed"


@pytest.mark.integration
def test_sigint_saves_a_checkpoint_and_resume_finishes(work: Path) -> None:
    run = work / "runs" / "long"
    proc = subprocess.Popen(
        [sys.executable, "-m", "labkit", "pretrain", "--name", "long", "--steps", "100000",
         "--eval-every", "1000", "--log-every", "1", "--train-tokens", "20000",
         "--eval-tokens", "2000", "--no-progress"],
        cwd=work, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never logged a step"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "labkit pretrain --name long --resume" in stderr
    stopped = card(run)
    assert stopped["status"] == "interrupted"
    assert (run / "checkpoints" / f"step-{stopped['steps']:08d}" / "state.pt").is_file()
    ok(labkit("pretrain", "--name", "long", "--resume", "--steps", str(stopped["steps"] + 3),
              "--no-progress", cwd=work))
    finished = card(run)
    assert finished["status"] == "finished" and finished["steps"] == stopped["steps"] + 3
    assert_steps_increase(metrics(run))


def test_help(tmp_path: Path) -> None:
    top, pretrain = labkit_all(["--help"], ["pretrain", "--help"], cwd=tmp_path)
    for command in ("pretrain", "eval", "generate", "runs", "examples:"):
        assert command in ok(top).stdout
    text = ok(pretrain).stdout
    for option in ("--preset", "--model", "--epochs", "--time-budget", "--resume", "--init-from",
                   "--precision", "--runs-dir", "default: runs", "examples:"):
        assert option in text
