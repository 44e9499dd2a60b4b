"""Hostile and odd input: a file from a stranger never runs code, names never escape the runs
folder, and every odd value either works or ends in a clear LabkitError (from the command
line: an exit code and one line), never a crash or a hang.

Property-based (hypothesis, derandomized so every run tries the same cases): tokenizers and
vocabularies on any Unicode, empty and huge text; generation parameters (temperature 0,
negative, huge, tiny; top-k 0 or above the vocabulary; top-p 0 or 1; odd seeds); command-line
arguments built from the parser's own flags with hostile values; truncated, bit-flipped and
rewritten run files (config.json, card.json, tokenizer.json, model.safetensors, the training
state, metrics.jsonl). Each case runs under an alarm: a hang fails it. The number of cases is
printed at the end (`pytest -s`).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import math
import os
import pickle
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit.cli import build_parser, main
from labkit.data import BPETokenizer, Vocab, WordTokenizer, load_tokenizer
from labkit.data.tokenizers import tokenizer_from_dict
from labkit.errors import LabkitError, RunError
from labkit.generate import SamplingConfig, generate
from labkit.models import RNNConfig, TransformerConfig, build_model
from labkit.runs import MetricsWriter, RunDir, list_runs, load_state, load_weights, read_metrics, safe_run_path
from labkit.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
CASES: Counter[str] = Counter()


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@contextlib.contextmanager
def within(seconds: float):
    """Fail (instead of hanging) if the block takes longer than `seconds`."""
    def alarm(signum, frame):
        raise TimeoutError(f"hung: still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module", autouse=True)
def count_cases():
    yield
    detail = ", ".join(f"{area} {n}" for area, n in sorted(CASES.items()))
    print(f"\nhostile input: {sum(CASES.values())} cases tried ({detail})")


# Every unicode code point, lone surrogates included (text from a file decoded with errors=
# "surrogateescape" has them).
ANY_CHAR = st.characters(codec=None, categories=None)
ANY_TEXT = st.text(ANY_CHAR, max_size=200)
NO_SURROGATES = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/lm (a tiny LSTM) and runs/tf (a tiny Transformer) on the generated corpus."""
    from labkit.data import DataConfig
    from labkit.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("runs")
    data = DataConfig(corpus="synthetic", train_tokens=4000, eval_tokens=300)
    train = TrainConfig(max_steps=4, eval_every=2, log_every=1, batch_size=4, seq_len=16,
                        device="cpu")
    pretrain(RNNConfig(d_embed=16, d_hidden=16, n_layers=1, dropout=0.0), train, data, root / "lm")
    pretrain(TransformerConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, context_length=16,
                               dropout=0.0), train, data, root / "tf")
    return root


def copy_run(runs: Path, name: str, dest: Path) -> RunDir:
    shutil.copytree(runs / name, dest)
    return RunDir(dest)


# --- security -----------------------------------------------------------------------------------
class Payload:
    """Unpickling this calls open(marker, "w"): a file appears if the pickle ever runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path, legacy: bool = False) -> None:
    if legacy:  # a plain pickle stream, not torch's zip format
        path.write_bytes(pickle.dumps({"step": 4, "x": Payload(marker)}, protocol=2))
    else:
        torch.save({"step": 4, "optimizer": Payload(marker)}, path)


def labkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABKIT_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "labkit", *args], cwd=cwd, env=env,
                          capture_output=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    stderr = result.stderr.decode("utf-8", "replace")
    lines = stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("labkit: error:"), stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_pickle_payload_in_a_run_is_refused_and_never_runs(runs: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    home = tmp_path / "runs"
    run = copy_run(runs, "lm", home / "lm")
    state = run.latest_checkpoint() / "state.pt"
    plant(state, marker)
    card, metrics = run.card_path.read_bytes(), run.metrics_path.read_bytes()
    # The real command: --resume refuses the state; nothing trains, nothing is written.
    resumed = labkit("pretrain", "--runs-dir", str(home), "--name", "lm", "--resume", "--steps",
                     "8", cwd=tmp_path)
    one_line_error(resumed, "refusing to load", "state.pt")
    assert not marker.exists()
    assert run.card_path.read_bytes() == card and run.metrics_path.read_bytes() == metrics
    # eval reads weights only (safetensors), never the training state: it works, runs nothing.
    evaluated = labkit("eval", str(run.root), "--which", "last", "--device", "cpu", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    # The same payload as a plain pickle, and in the places weights and JSON live.
    plant(state, marker, legacy=True)
    with pytest.raises(RunError, match="refusing to load"):
        load_state(state)
    for target in ("model.safetensors", "tokenizer.json", "config.json"):
        victim = copy_run(runs, "lm", tmp_path / f"victim-{target}")
        plant(victim.root / target, marker)
        for command in (["eval", str(victim.root)], ["generate", str(victim.root)]):
            assert main([*command, "--device", "cpu"]) == 2, (target, command)
    assert not marker.exists()
    CASES["security"] += 8


def test_run_names_cannot_escape_the_runs_folder(runs: Path, tmp_path: Path, monkeypatch,
                                                 capsys) -> None:
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "inside" / "runs"
    home.mkdir(parents=True)
    shutil.copytree(runs / "lm", home / "lm")
    bad = ["../escape", "/tmp/escape-abs", "a/../../escape", "..", ".", "sub/escape",
           "..\\escape", "esc\x00ape", "esc\nape", "esc\tape"]  # ("" means the default name)
    for name in bad:
        for argv in (["pretrain", "--runs-dir", str(home), "--name", name, "--corpus",
                      "synthetic", "--steps", "1"],
                     ["pretrain", "--runs-dir", str(home), "--name", name, "--resume"],
                     ["finetune", "lm", "--runs-dir", str(home), "--name", name]):
            assert main(argv) == 2, (name, argv)
            err = capsys.readouterr().err
            assert "invalid run name" in err or "--resume needs --name" in err, err
            CASES["run names"] += 1
    assert sorted(p.name for p in home.iterdir()) == ["lm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inside"]
    assert not Path("/tmp/escape-abs").exists()


@fuzz(150)
@given(name=ANY_TEXT)
def test_any_run_name_stays_under_the_root(name: str) -> None:
    root = Path("/tmp/labkit-runs-root")
    CASES["run names"] += 1
    try:
        path = safe_run_path(root, name)
    except RunError:
        return
    assert path.parent == root.resolve() and path.name == name


def source_files() -> list[Path]:
    return sorted([*ROOT.glob("labkit/**/*.py"), *ROOT.glob("app/**/*.py")])


def test_nothing_evaluates_text_as_code_or_unpickles() -> None:
    """No eval/exec/compile of strings, no pickle or marshal loads, torch.load only with
    weights_only=True, no shell=True, no os.system: read from the code itself (AST)."""
    found = []
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            f, where = node.func, f"{path.relative_to(ROOT)}:{node.lineno}"
            name = f.id if isinstance(f, ast.Name) else None
            dotted = ast.unparse(f)
            keywords = {k.arg: k.value for k in node.keywords}
            if name in ("eval", "exec", "compile", "__import__"):
                found.append(f"{where}: {name}()")
            if dotted in ("pickle.load", "pickle.loads", "marshal.load", "marshal.loads",
                          "os.system", "os.popen", "yaml.load", "shelve.open", "dill.load"):
                found.append(f"{where}: {dotted}()")
            if dotted == "torch.load":
                safe = keywords.get("weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    found.append(f"{where}: torch.load without weights_only=True")
            shell = keywords.get("shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and not shell.value):
                found.append(f"{where}: shell=True")
    assert not found, found
    CASES["security"] += len(source_files())


def test_the_app_and_labkit_serve_on_localhost_only() -> None:
    section, server = None, {}
    for line in (ROOT / ".streamlit" / "config.toml").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and section == "server":
            key, value = (part.strip() for part in line.split("=", 1))
            server[key] = value.strip('"')
    assert server["address"] == "127.0.0.1"
    # labkit itself starts no server: no sockets bound, no HTTP servers.
    servers = ("http.server", "socketserver", "socket.socket", "HTTPServer", "uvicorn", "flask",
               ".bind(", "serve_forever")
    hits = [f"{p.relative_to(ROOT)}: {s}" for p in source_files() for s in servers
            if s in p.read_text()]
    assert not hits, hits
    CASES["security"] += 1


# --- tokenizers and vocabularies ----------------------------------------------------------------
@fuzz(120)
@given(lines=st.lists(ANY_TEXT, max_size=8), probes=st.lists(ANY_TEXT, max_size=4),
       split=st.sampled_from(["whitespace", "basic_english"]))
def test_word_tokenizers_take_any_unicode(lines, probes, split, tmp_path_factory) -> None:
    CASES["tokenizers"] += 1
    with within(20):
        tok = WordTokenizer.train(lines, split=split, specials=("<unk>", "<eos>"))
        for text in [*lines, *probes, ""]:
            ids = tok.encode(text)
            assert all(0 <= i < tok.vocab_size for i in ids)
            assert isinstance(tok.decode(ids), str)
            if split == "whitespace" and text in lines:  # every word is in the vocabulary
                assert tok.decode(ids) == " ".join(text.split())
        stream = tok.encode_lines(lines)
        assert stream.dtype == torch.long and stream.numel() >= len(lines)
        path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
        tok.save(path)
        again = load_tokenizer(path)
        assert [again.encode(t) for t in probes] == [tok.encode(t) for t in probes]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    from labkit.data.synthetic import synthetic_splits

    lines = synthetic_splits()["train"][:300] + ["naïve café — 東京 🙂 ∑ x² ¿qué?"]
    return BPETokenizer.train(lines, vocab_size=400)


@fuzz(150)
@given(text=ANY_TEXT)
def test_bpe_round_trips_any_text_or_says_why(bpe: BPETokenizer, text: str) -> None:
    CASES["tokenizers"] += 1
    with within(10):
        try:
            ids = bpe.encode(text)
        except LabkitError as e:
            assert "surrogates" in str(e)
            return
        assert bpe.decode(ids) == text  # byte-level: nothing is ever unknown or lost


@fuzz(80)
@given(ids=st.lists(st.one_of(st.integers(-2**70, 2**70), st.floats(), st.text(max_size=3),
                              st.none(), st.booleans()), max_size=6))
def test_decoding_odd_ids_is_an_error_not_a_crash(bpe: BPETokenizer, ids) -> None:
    CASES["tokenizers"] += 1
    word = WordTokenizer.train(["a b c"], specials=("<unk>", "<eos>"))
    for tok in (bpe, word):
        with contextlib.suppress(LabkitError):
            assert isinstance(tok.decode(ids), str)
        with contextlib.suppress(LabkitError):
            assert all(isinstance(t, str) for t in tok.id_to_token(ids))


def test_huge_and_empty_text() -> None:
    words = " ".join(f"w{i % 5000}" for i in range(1_000_000))  # about 6 MB on one line
    with within(60):
        tok = WordTokenizer.train([words], specials=("<unk>", "<eos>"))
        assert len(tok.encode(words)) == 1_000_000
        assert tok.encode("") == [] and tok.encode_lines([]).numel() == 0
        bpe = BPETokenizer.train([words[:200_000]], vocab_size=300)
        assert bpe.decode(bpe.encode(words[:2_000_000])) == words[:2_000_000]
        assert bpe.encode("") == []
    CASES["tokenizers"] += 6


@fuzz(150)
@given(itos=st.lists(ANY_TEXT, max_size=8), default=st.one_of(st.none(), ANY_TEXT,
                                                               st.just("<unk>")),
       probes=st.lists(ANY_TEXT, max_size=4))
def test_vocab_from_any_tokens(itos, default, probes) -> None:
    CASES["vocab"] += 1
    try:
        vocab = Vocab(itos, default=default)
    except LabkitError:
        return
    for token in probes:
        try:
            i = vocab[token]
        except LabkitError:
            assert default is None and token not in itos
            continue
        assert 0 <= i < len(vocab)
    assert Vocab.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab


@fuzz(150)
@given(data=st.one_of(JSON, st.fixed_dictionaries(
    {"kind": st.sampled_from(["whitespace", "basic_english", "bpe", "x"]) | JSON,
     "format_version": st.just(1) | JSON, "vocab": JSON | st.fixed_dictionaries(
         {"itos": st.lists(JSON, max_size=4), "default": JSON}),
     "hf_tokenizer": st.text(max_size=50) | JSON})))
def test_tokenizer_json_of_any_shape(data) -> None:
    CASES["tokenizer json"] += 1
    with within(10):
        try:
            tok = tokenizer_from_dict(data)
        except LabkitError:
            return
        assert isinstance(tok.encode("a b"), list)


# --- generation parameters ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def models():
    tok = WordTokenizer.train(["the cat sat on the mat .", "a dog ran"], specials=("<unk>", "<eos>"))
    torch.manual_seed(0)
    rnn = build_model(RNNConfig(vocab_size=tok.vocab_size, d_embed=8, d_hidden=8, n_layers=1))
    tf = build_model(TransformerConfig(vocab_size=tok.vocab_size, d_model=8, n_layers=1,
                                       n_heads=2, d_ff=16, context_length=6))
    return tok, [rnn, tf]


NUMBER = st.one_of(st.floats(), st.integers(-10, 10), st.integers(-2**80, 2**80),
                   st.sampled_from([0, 0.0, -0.0, 1, 1.0, 1e-300, 5e-324, 1e300, -1.0, 2**63]),
                   st.booleans(), st.none(), st.text(max_size=3))


@fuzz(300)
@given(temperature=NUMBER, top_k=NUMBER | st.integers(0, 40), top_p=NUMBER | st.floats(0, 1),
       max_tokens=st.integers(-2, 6) | NUMBER, seed=st.none() | st.integers(-2**70, 2**70),
       prompt=ANY_TEXT, family=st.integers(0, 1), use_cache=st.booleans())
def test_any_sampling_parameters(models, temperature, top_k, top_p, max_tokens, seed, prompt,
                                 family, use_cache) -> None:
    CASES["generation"] += 1
    tok, nets = models
    try:
        config = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                                max_tokens=max_tokens, seed=seed)
    except LabkitError:
        return
    with within(20):
        out = generate(nets[family], tok, prompt, config, use_cache=use_cache)
    assert len(out.tokens) <= config.max_tokens
    for t in out.tokens:
        assert 0 <= t.id < tok.vocab_size
        assert 0.0 <= t.prob <= 1.0 and 0.0 <= t.model_prob <= 1.0
        assert math.isfinite(t.entropy) and t.entropy >= 0.0
        if config.temperature == 0:
            assert t.prob == 1.0


# --- the command line ---------------------------------------------------------------------------
SLOW_FLAGS = {"--compile"}  # torch.compile takes ~40 s on a CPU: left out of the fuzz
# `labkit app` becomes a server until stopped: tests/integration/test_app_command.py starts it for real.
SERVING = {"app"}
# `labkit bench` runs for as long as these say (a duration, or more variants): fixed small below,
# as is where it writes.
BENCH_FIXED = {"--budget", "--window", "--variants", "--budget-variants", "--families", "--out"}
BENCH_SMALL = ["--size", "tiny", "--families", "lstm", "--variants", "default", "--budget-variants", "none",
               "--budget", "0.3", "--window", "0.05", "--windows", "1", "--evals", "1", "--eval-tokens", "300",
               "--train-tokens", "3000", "--gen-tokens", "2", "--quiet", "--out", "bench.json"]
# Flags whose size drives the work done: bounded, so a valid command finishes in a second.
BOUNDS = {"--steps": (-1, 3), "--layers": (-1, 2), "--d-model": (-2, 32), "--hidden": (-1, 32),
          "--heads": (-1, 4), "--context": (-1, 48), "--batch-size": (-1, 8),
          "--seq-len": (-1, 32), "--vocab-size": (-1, 400), "--max-tokens": (-1, 12),
          "--grad-accum": (-1, 2), "--eval-every": (-1, 3), "--max-steps": (-1, 2),
          "--train-size": (-1, 50), "--epochs": (-1, 1), "--log-every": (-1, 3),
          "--patience": (-1, 2), "--windows": (-1, 2), "--evals": (-1, 2), "--eval-tokens": (-1, 400),
          "--gen-tokens": (-1, 4), "--train-tokens": (-1, 3000), "--threads": (-1, 2)}


def flag_table() -> dict[str, list]:
    """For each command, its optional actions, read from the parser itself."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    return {name: [a for a in p._actions if a.option_strings and a.option_strings[0] != "-h"
                   and a.option_strings[0] not in SLOW_FLAGS
                   and not (name == "bench" and a.option_strings[0] in BENCH_FIXED)]
            for name, p in sub.choices.items() if name not in SERVING}


FLAGS = flag_table()


@st.composite
def command_lines(draw, places: dict[str, str]) -> list[str]:
    command = draw(st.sampled_from([*FLAGS, "bogus", ""]))
    argv = [command] if command else []
    if command in ("eval", "generate", "finetune", "predict", "export", "import"):
        argv.append(draw(st.sampled_from([places["run"], "lm", "tf", "nope", "../lm", "", LONG_NAME, LONG_PATH])
                         | ANY_TEXT))
    if command == "predict":
        argv += draw(st.lists(ANY_TEXT, min_size=0, max_size=2))
    if command == "pretrain":  # defaults that keep a valid run small; drawn flags come after
        argv += ["--corpus", "synthetic", "--train-tokens", "3000", "--eval-tokens", "300",
                 "--no-progress"]
    if command == "bench":
        argv += BENCH_SMALL
    for action in draw(st.lists(st.sampled_from(FLAGS.get(command, [])), max_size=5)
                       if FLAGS.get(command) else st.just([])):
        flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") \
            else action.option_strings[0]
        argv.append(flag)
        if action.nargs == 0:
            continue
        lo, hi = BOUNDS.get(flag, (-5, 10**6))
        if action.choices:
            value = draw(st.sampled_from(list(action.choices)) | ANY_TEXT)
        elif action.type is int:
            value = str(draw(st.integers(lo, hi) | st.sampled_from([-1, 0, 10**30])
                             if flag not in BOUNDS else st.integers(lo, hi)))
        elif action.type is float:
            value = str(draw(st.floats(lo, hi) | st.sampled_from(["nan", "inf", "-inf", "1e400"])
                             if flag in BOUNDS else NUMBER.map(str)))
        elif flag in ("--runs-dir", "--data", "--corpus", "--init-from", "--prompt-file", "--out", "--tokenizer",
                      "--tensorboard"):
            value = draw(st.sampled_from(list(places.values()) + [LONG_NAME, LONG_PATH]) | ANY_TEXT)
        else:
            value = draw(ANY_TEXT | st.sampled_from(["cpu", "meta", "cuda", "cpu:1", "mps",
                                                     "15m", "0", "-1", "1e9"]))
        argv.append(value)
    return argv


LONG_NAME, LONG_PATH = "n" * 300, "p/" * 2100  # longer than a file name (255 bytes), a path (4,096) may be


@contextlib.contextmanager
def memory_cap(extra: int = 4 << 30):
    """This process may take `extra` more bytes of memory for the block (RLIMIT_DATA): a command that
    would allocate without end fails the test with a MemoryError instead of taking the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[5]) * os.sysconf("SC_PAGE_SIZE")  # data + stack
    resource.setrlimit(resource.RLIMIT_DATA, (used + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


@pytest.fixture
def fuzz_home(runs: Path, tmp_path: Path, monkeypatch) -> dict[str, str]:
    """A working folder: no corpora and no downloads (so odd finetune/pretrain commands fail
    fast), runs/ holding copies of the two runs, and a few files to point flags at."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "cache"))
    for name in ("lm", "tf"):
        shutil.copytree(runs / name, tmp_path / "runs" / name)
    (tmp_path / "notes.txt").write_text("".join(f"line {i} of my notes .\n" for i in range(40)))
    (tmp_path / "binary.bin").write_bytes(os.urandom(3000))
    (tmp_path / "empty.txt").write_text("")
    return {"run": str(tmp_path / "runs" / "lm"), "runs": "runs", "notes": "notes.txt",
            "binary": "binary.bin", "empty": "empty.txt", "folder": str(tmp_path),
            "missing": "no/such/file", "escape": "../../etc"}


def test_command_line_fuzz(fuzz_home: dict[str, str], capsys) -> None:
    """`labkit.cli.main(argv)` returns an exit code for any argv: 0, 1 (the loss diverged),
    2 (a mistake, said in one line) or 128+signal, and prints no traceback."""
    codes: Counter[int] = Counter()

    @fuzz(120)
    @given(argv=command_lines(fuzz_home))
    def case(argv: list[str]) -> None:
        CASES["command line"] += 1
        with within(60), memory_cap():
            code = main(argv)
        out, err = capsys.readouterr()
        assert isinstance(code, int) and code in (0, 1, 2), (argv, code, err[-2000:])
        assert "Traceback" not in err, (argv, err[-2000:])
        if code == 2 and re.match(r"labkit( \w+)?: error: ", err):  # a mistake in argv, or a LabkitError
            assert len(err.strip().splitlines()) == 1, (argv, err)
        codes[code] += 1

    case()
    print(f"\ncommand-line fuzz, exit codes: {dict(sorted(codes.items()))}")
    assert codes[0] and codes[2], codes  # both valid and refused commands were tried


def test_command_line_spot_checks_in_real_processes(runs: Path, tmp_path: Path) -> None:
    """A few of the same in real processes: odd bytes in argv, absurd sizes, odd devices."""
    run = str(runs / "lm")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LABKIT_OFFLINE": "1"}
    cases = {  # argv: words the one-line error must hold (None: it must work)
        ("pretrain", "--corpus", "synthetic", "--d-model", "1000000000", "--name", "huge"):
            ["parameters", "memory"],
        ("generate", run, "--temperature", "nan"): ["temperature"],
        ("generate", run, "--seed", str(2**80)): ["seed"],
        ("eval", run, "--device", "meta"): ["unknown device"],
        ("pretrain", "--name", "../escape", "--corpus", "synthetic"): ["invalid run name"],
        ("generate", run, "--prompt", b"caf\xff \xc3(", "--max-tokens", "3", "--seed", "1"): None,
        ("generate", run, "--top-k", "100000", "--top-p", "1", "--temperature", "1e-300",
         "--max-tokens", "3"): None,
    }
    procs = [subprocess.Popen([sys.executable, "-m", "labkit", *argv], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for argv in cases]
    for (argv, words), proc in zip(cases.items(), procs):
        out, err = proc.communicate(timeout=120)
        result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if words is None:
            assert proc.returncode == 0 and b"Traceback" not in err, (argv, err)
        else:
            one_line_error(result, *words)
        CASES["command line (processes)"] += 1
    bogus = subprocess.run([sys.executable, "-m", "labkit", "--bogus"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert bogus.returncode == 2 and bogus.stderr == "labkit: error: unrecognized arguments: --bogus (see: labkit --help)\n"
    CASES["command line (processes)"] += 1


# --- damaged run files --------------------------------------------------------------------------
FILES = ["config.json", "card.json", "tokenizer.json", "model.safetensors", "metrics.jsonl",
         "checkpoint/model.safetensors", "checkpoint/state.pt"]
# Damage that is never valid: JSON nested deeper than any file labkit writes (thousands of levels
# make the parser itself recurse), a sparse file larger than any kind's size limit, a FIFO (a
# reader that opens it waits for a writer), a link to /dev/zero (endless bytes) and a link to a
# good copy of the file outside the run (labkit must not read, write or delete through it).
ALWAYS_BROKEN = ("deep", "huge", "fifo", "dev-zero", "outside")


@st.composite
def damage(draw, size: int, is_json: bool):
    """How to damage a file of `size` bytes: truncate, flip bits, overwrite with garbage, (JSON) put
    an odd value at a random place, or one of ALWAYS_BROKEN."""
    kinds = ["truncate", "flip", "garbage", *ALWAYS_BROKEN] + (["rewrite"] * 3 if is_json else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "truncate":
        return kind, draw(st.integers(0, max(0, size - 1)))
    if kind == "flip":
        return kind, draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 7)),
                                   min_size=1, max_size=8))
    if kind == "garbage":
        return kind, draw(st.binary(max_size=2048))
    if kind == "deep":
        return kind, draw(st.sampled_from([65, 999, 5000, 100_000]) | st.integers(65, 20_000))
    if kind in ALWAYS_BROKEN:
        return kind, None
    return kind, (draw(st.integers(0, 10**6)), draw(st.sampled_from(
        [-1, 0, 10**12, 2**70, 3.5, -0.0, "x", "", None, True, [], {}, [1, 2], {"a": 1},
         float("nan"), float("inf"), "\udcff", "../../etc"]) | JSON))


def apply_damage(path: Path, how, outside: Path) -> None:
    kind, arg = how
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[:arg])
    elif kind == "flip":
        buf = bytearray(data)
        for pos, bit in arg:
            buf[pos % len(buf)] ^= 1 << bit
        path.write_bytes(bytes(buf))
    elif kind == "garbage":
        path.write_bytes(arg)
    elif kind == "deep":  # metrics.jsonl keeps its records and gets one deep line more
        deep = b"[" * arg + b"]" * arg
        path.write_bytes(data + deep + b"\n" if path.name == "metrics.jsonl" else deep)
    elif kind == "huge":  # sparse: no disk is used
        os.truncate(path, 600 << 20)
    elif kind == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.unlink()
        path.symlink_to("/dev/zero")
    elif kind == "outside":
        outside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, outside)
        path.symlink_to(outside)
    else:  # replace the n-th value anywhere in the JSON tree with an odd one
        pick, value = arg
        tree = json.loads(data)
        slots = []

        def walk(node):
            items = node.items() if isinstance(node, dict) else enumerate(node) \
                if isinstance(node, list) else []
            for key, child in items:
                slots.append((node, key))
                walk(child)

        walk(tree)
        if slots:
            parent, key = slots[pick % len(slots)]
            parent[key] = value
        path.write_text(json.dumps(tree), errors="surrogateescape")


def verdict(target: str, kind: str, original: Path, damaged: Path) -> bool | None:
    """Is the damaged file broken (True), as good as the original (False), or unknown (None: a
    changed value, or bits flipped in tensor data, which no reader can tell from a real one)?
    Decided by other readers than labkit's: Python's json, safetensors, torch.load."""
    if target == "metrics.jsonl":  # a damaged line is skipped (tested below): only the file itself can be broken
        return kind in ALWAYS_BROKEN and kind != "deep"
    if kind in ALWAYS_BROKEN:
        return True
    data = damaged.read_bytes()
    if target.endswith(".json"):
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            return True
        return True if not isinstance(value, dict) else False if value == json.loads(original.read_bytes()) else None
    if data == original.read_bytes():
        return False
    try:
        if target.endswith("state.pt"):
            # mapped to the CPU as every reader of a run maps it: a flipped byte in a storage's device
            # name ("cpu") changes nothing a reader reads
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load as load_tensors

            load_tensors(data)
    except Exception:
        return True
    return None


def good_records(path: Path) -> list[dict]:
    """metrics.jsonl as an independent reader sees it: each whole line that is a JSON object."""
    found = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            found.append(record)
    return found


@pytest.fixture(scope="module")
def resumer(runs: Path):
    """Data for building Trainers that resume from damaged checkpoints (loaded once)."""
    from labkit.data import DataConfig, load_lm_data

    config = RunDir(runs / "lm").load_config()
    return config, load_lm_data(DataConfig.from_dict(config["data"]),
                                load_tokenizer(runs / "lm" / "tokenizer.json"))


def outcome(action) -> str | None:
    """None when `action()` works; the message of the LabkitError it raised (one line) otherwise."""
    try:
        action()
    except LabkitError as e:
        assert "\n" not in str(e), str(e)
        return str(e)
    return None


@pytest.mark.parametrize("target", FILES)
def test_damaged_run_files(runs: Path, tmp_path: Path, resumer, target: str, capsys) -> None:
    """Damage to one file of a run is detected: every reader of that file (listing runs, `labkit
    runs`, loading the best or the last weights, resuming from the checkpoint, the metrics reader and
    writer) gives a one-line error naming it, or, for metrics.jsonl, skips exactly the damaged
    lines; every reader of the other files works; nothing outside the run changes. When the damage
    cannot be told from a real file (a changed value), a reader works or raises a LabkitError."""
    from labkit.runs import load_run

    source = runs / "lm"
    checkpoint = RunDir(source).latest_checkpoint().name
    relative = target.replace("checkpoint/", f"checkpoints/{checkpoint}/")
    size = (source / relative).stat().st_size
    config, data = resumer
    counter = iter(range(10**6))
    # which of the readers below read the target: the others must work whatever happened to it
    readers = {"list": ("config.json", "card.json"), "best": ("config.json", "tokenizer.json", "model.safetensors"),
               "last": ("config.json", "tokenizer.json", "checkpoint/model.safetensors"),  # weights only
               "resume": ("checkpoint/model.safetensors", "checkpoint/state.pt"), "metrics": ("metrics.jsonl",)}
    # loading the last weights reads no training state, but refuses a checkpoint whose state.pt is a link out
    may_notice = {"last": ("checkpoint/state.pt",)}
    verdicts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()

    @fuzz(45)
    @given(how=damage(size, target.endswith(".json")))
    def case(how) -> None:
        CASES[f"damaged {target}"] += 1
        home = tmp_path / f"c{next(counter)}"
        run = copy_run(runs, "lm", home / "runs" / "lm")
        outside = home / "outside" / Path(relative).name
        apply_damage(run.root / relative, how, outside)
        kept = outside.read_bytes() if outside.exists() else None
        broken = verdict(target, how[0], source / relative, outside if how[0] == "outside" else run.root / relative)
        verdicts[{True: "broken", False: "intact", None: "unknown"}[broken]] += 1
        kinds[how[0]] += 1
        named = f"lm/{relative}"

        def check(reader: str, message: str | None) -> None:
            if target in may_notice.get(reader, ()) and message is not None:
                assert named in message, (reader, how, message)
            elif target not in readers[reader] or broken is False:
                assert message is None, (reader, how, message)
            elif broken:
                assert message is not None and named in message, (reader, how, message)

        with within(30):
            infos = list_runs(run.root.parent)  # never raises
            assert len(infos) == 1
            check("list", infos[0].error)
            assert main(["runs", "--runs-dir", str(run.root.parent)]) == 0
            out = capsys.readouterr().out
            if infos[0].error:
                assert f"lm: {infos[0].error}" in out
            for which in ("best", "last"):
                check(which, outcome(lambda which=which: load_run(run.root, which=which)))

            def resume():
                trainer = Trainer(build_model(config["model"]), data, TrainConfig.from_dict(config["train"]), None)
                trainer.resume(run.latest_checkpoint() or run.root / "checkpoints" / "none")

            check("resume", outcome(resume))
            records = read_metrics(run.metrics_path)
            if target == "metrics.jsonl":  # readers skip what is damaged, and only that
                assert json.dumps(records) == json.dumps([] if broken else good_records(run.metrics_path)), how
            check("metrics", outcome(lambda: MetricsWriter(run.metrics_path)))
        if kept is not None:
            assert outside.read_bytes() == kept, "a file outside the run was changed"
        capsys.readouterr()
        shutil.rmtree(home)

    case()
    print(f"\ndamaged {target}: {dict(verdicts)}")
    assert set(ALWAYS_BROKEN) <= set(kinds), kinds  # every damage that must be detected was tried
    if target != "metrics.jsonl":  # a damaged line of it is skipped, not an error (checked above)
        assert verdicts["broken"] >= 15, verdicts  # enough of the cases that must be detected were tried


def test_state_file_with_wrong_contents_is_a_clear_error(runs: Path, tmp_path: Path, resumer):
    """Plain tensors, but not what a checkpoint holds (a stranger's state.pt, another run's)."""
    config, data = resumer
    odd = [{}, {"step": "x"}, {"step": 1}, [1, 2], torch.zeros(3), {"optimizer": {}},
           {**load_state(RunDir(runs / "tf").latest_checkpoint() / "state.pt")}]
    for i, value in enumerate(odd):
        run = copy_run(runs, "lm", tmp_path / f"s{i}")
        torch.save(value, run.latest_checkpoint() / "state.pt")
        trainer = Trainer(build_model(config["model"]), data,
                          TrainConfig.from_dict(config["train"]), None)
        with pytest.raises(LabkitError):
            trainer.resume(run.latest_checkpoint())
        CASES["damaged checkpoint/state.pt"] += 1


def test_weights_file_of_another_model_is_a_clear_error(runs: Path, tmp_path: Path) -> None:
    run = copy_run(runs, "lm", tmp_path / "lm")
    shutil.copy(runs / "tf" / "model.safetensors", run.weights_path)
    model = build_model(RNNConfig.from_dict(run.load_config()["model"]))
    with pytest.raises(RunError, match="does not match"):
        load_weights(model, run.weights_path)
    buffer = io.BytesIO(b"\x00" * 8)
    run.weights_path.write_bytes(buffer.getvalue())
    with pytest.raises(RunError, match="corrupt"):
        load_weights(model, run.weights_path)
    CASES["damaged model.safetensors"] += 2


def test_a_damaged_metrics_file_never_breaks_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n\xff\xfe\n[1, 2]\nnull\n{"step": 2, "loss": NaN}\n{"st')
    records = read_metrics(path)
    assert records[0] == {"step": 1} and records[-1]["step"] == 2
    CASES["damaged metrics.jsonl"] += 1
