"""The prepared GPU check (benchmarks/gpu.sh -> benchmarks/gpu_check.py), on a CPU: its arguments,
the plan --dry-run prints (every command one that labkit accepts), the whole check at tiny sizes
end to end (every step run, one JSON file with each step's figures), and a step that fails or
runs out of time recorded while the check goes on. Its numbers are not asserted: speed is
measured, not tested."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
STEPS = ["environment", "bench_lstm", "bench_transformer", "compile", "bf16", "fp16", "notebook_04", "notebook_05", "ddp"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def gpu_sh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def planned(stdout: str) -> dict[str, list[str]]:
    """The dry run's commands by step: `# name: ...` then the command line."""
    lines = stdout.splitlines()
    return {line[2:].split(":")[0]: shlex.split(lines[i + 1]) for i, line in enumerate(lines) if line.startswith("# ")}


def test_arguments_and_the_plan(tmp_path):
    from labkit.cli import build_parser

    assert gpu_sh("--help").returncode == 0
    for bad in (["--bogus"], ["--size", "huge"], ["--budget"], ["--limit", "soon"], ["--device", "cpu"],
                ["--device", "tpu"], ["--scale", "0"], ["--only", "bench_lstm,warp"], ["--step-limit", "bench=9"],
                ["--step-limit", "fp16=soon"]):
        done = gpu_sh(*bad)
        assert done.returncode == 2 and done.stderr.startswith("gpu.sh: ") and done.stderr.count("\n") == 1, bad
    done = gpu_sh("--dry-run", "--out", str(tmp_path / "g.json"), "--budget", "1m")
    assert done.returncode == 0, done.stderr
    assert "530 s planned" in done.stdout and "--limit 540 s" in done.stdout
    plan = planned(done.stdout)
    assert list(plan) == [s for s in STEPS if s != "compile"]
    for family in ("lstm", "transformer"):
        bench = plan[f"bench_{family}"]
        assert bench[1:4] == ["-m", "labkit", "bench"]
        args = build_parser().parse_args(bench[3:])  # the command it would run is one labkit accepts
        assert (args.size, args.device, args.target_ppl, args.budget, args.families) == ("medium", "cuda", 150.0, 60.0,
                                                                                         (family,))
        assert args.variants == ("reference", "default", "compile") and args.budget_variants == ("default", "compile")
    for precision in ("bf16", "fp16"):
        args = build_parser().parse_args(plan[precision][3:])
        assert (args.precision, args.device, args.preset, args.model) == (precision, "cuda", "demo", "transformer")
    for name in ("notebook_04", "notebook_05"):
        assert {"LABKIT_PROFILE=gpu", "LABKIT_SCALE=0.01"} <= set(plan[name])
        assert plan[name][plan[name].index("-m") + 1] == "labkit.notebook_exec"
    ddp = plan["ddp"]
    assert "--nproc_per_node=2" in ddp and build_parser().parse_args(ddp[ddp.index("labkit") + 1:]).device == "cuda"
    assert not (tmp_path / "g.json").exists()
    done = gpu_sh("--dry-run", "--only", "fp16", "--step-limit", "fp16=99")
    assert list(planned(done.stdout)) == ["environment", "fp16"] and "# fp16: at most 99 s" in done.stdout
    if not torch.cuda.is_available():
        done = gpu_sh("--out", str(tmp_path / "g.json"))
        assert done.returncode == 3 and "no CUDA GPU" in done.stderr
        assert not (tmp_path / "g.json").exists()


@pytest.mark.slow
def test_every_step_runs_at_tiny_size_on_a_cpu_into_one_json(tmp_path):
    from labkit.device import cpu_has_bf16
    from labkit.runs import RunDir

    out, work = tmp_path / "check.json", tmp_path / "work"
    # The limits are an H100's: a CPU, a busy one too, gets ten minutes a step (this checks the script, not speed)
    limits = [a for step in STEPS if step != "compile" for a in ("--step-limit", f"{step}=600")]
    done = gpu_sh("--device", "cpu", "--size", "tiny", "--out", str(out), "--work", str(work), "--limit", "3000",
                  *limits, timeout=3100)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert list(result["steps"]) == STEPS and result["ok"] is True and result["failed"] == []
    assert all(record["ok"] for record in result["steps"].values())
    assert result["seconds"] <= result["limit_s"] == 3000
    env = result["environment"]
    assert env["device"] == "cpu" and env["gpu_count"] == 0 and env["torch"] == torch.__version__
    for family in ("lstm", "transformer"):
        bench = result["steps"][f"bench_{family}"]["result"]
        assert list(bench["families"]) == [family]
        assert list(bench["families"][family]["variants"]) == ["reference", "default", "compile"]
        compiled = result["steps"]["compile"]["families"][family]
        assert compiled["tokens_per_s"] > 0 and compiled["speedup_over_default"] > 0
    tables = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_markdown.py"), str(out)],
                            capture_output=True, text=True, timeout=60)
    assert tables.returncode == 0 and "| lstm | compile |" in tables.stdout and "| transformer | compile |" in tables.stdout
    runs = {name: result["steps"][name] for name in ("bf16", "fp16", "ddp")}
    for name, run in runs.items():
        if name == "bf16" and not cpu_has_bf16():
            assert run["skipped"].startswith("this CPU has no native bf16")
            continue
        assert run["status"] == "finished" and run["steps"] == 10 and run["tokens_per_s"] > 0
        assert math.isfinite(run["final_loss"]) and run["device"] == "cpu"
    assert runs["fp16"]["precision"] == "fp16" and runs["fp16"]["loss_scale"] > 0 and runs["fp16"]["skipped_steps"] >= 0
    assert runs["ddp"]["processes"] == 2
    if cpu_has_bf16():
        assert runs["bf16"]["precision"] == "bf16" and runs["bf16"]["loss_scale"] is None
    for name in ("notebook_04", "notebook_05"):
        notebook = result["steps"][name]
        assert notebook["cell_error"] is None and notebook["cells_run"] == notebook["cells"] > 10
        assert "profile: smoke" in notebook["start"] and "LABKIT_SCALE=0.5" in notebook["start"]
        assert notebook["summary"].startswith("- ") and len(notebook["cell_seconds"]) == notebook["cells"]
    # LABKIT_SCALE reached the fine-tuning: the smoke profile's 12 steps, halved
    assert RunDir(work / "notebook-runs" / "05-pretrained-full-smoke").read_card()["steps"] == 6


def processes_naming(text: str) -> list[str]:
    """The command lines of this machine's processes that contain `text`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if text in line:
            found.append(line)
    return found


def test_a_step_out_of_time_is_stopped_recorded_and_the_check_goes_on(tmp_path):
    out, work = tmp_path / "check.json", tmp_path / "work"
    done = gpu_sh("--device", "cpu", "--size", "tiny", "--only", "bench_transformer,ddp", "--limit", "22",
                  "--out", str(out), "--work", str(work))
    failed = ["bench_transformer", "compile", "ddp"]
    assert done.returncode == 1 and "[bench_transformer] FAILED" in done.stdout and f"failed: {', '.join(failed)}" in done.stdout
    result = json.loads(out.read_text())
    assert list(result["steps"]) == ["environment", *failed] and result["failed"] == failed and result["ok"] is False
    bench = result["steps"]["bench_transformer"]
    assert bench["returncode"] is None and bench["error"].startswith("stopped at its time limit")
    assert bench["seconds"] < 22 and "read_error" in bench and bench["output_tail"]
    assert result["steps"]["compile"] == {"ok": False, "families": {},
                                          "error": "no bench for transformer (see steps.bench_<family>)"}
    assert result["steps"]["ddp"] == {"ok": False, "error": "not run: the --limit of 22 s was spent"}
    if Path("/proc/self/cmdline").exists():
        assert processes_naming(str(work)) == []  # the stopped step's processes went with it
