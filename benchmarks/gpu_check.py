"""The prepared GPU check: what one GPU machine should show of labkit, in one run bounded in
time (9 minutes on one GPU), written to one JSON file. Start it through benchmarks/gpu.sh:

    LABKIT_DATA=../shared/data bash benchmarks/gpu.sh --out runs/gpu-check.json   # on a CUDA machine
    bash benchmarks/gpu.sh --dry-run                     # the plan: every command, its time limit
    bash benchmarks/gpu.sh --device cpu --size tiny      # every step at tiny sizes on a CPU

The steps, in order, each a process of its own stopped at its time limit:

  environment  the GPUs (name, compute capability, memory, native bf16), torch, CUDA, cuDNN, NCCL
  bench_lstm, bench_transformer   `labkit bench` at the medium presets, one family each: the fp32
               reference, labkit's default path (bf16) and torch.compile: tokens/s, FLOP/s,
               validation perplexity after --budget, the time to --target-ppl; `compile` in the
               JSON is their torch.compile rows
  bf16, fp16   `labkit pretrain` of the demo Transformer for 20 s in each precision (fp16 with the
               gradient scaler, labkit/train/scaling.py): tokens/s, final loss, loss scale, skipped steps
  notebook_04, notebook_05   the notebooks in the gpu profile, every training length cut to --scale
               (LABKIT_SCALE, labkit.notebook.length_scale), each run whole by a real kernel
  ddp          `labkit pretrain` in two processes under torchrun (NCCL), with two GPUs or more

A step that fails is recorded (its error and the end of its output) and the check goes on; the
exit status is 1 when any step failed. `--device cpu --size tiny` checks this script: the tiny
presets on the synthetic corpus, the notebooks in the smoke profile, ddp over gloo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # labkit from this checkout, installed or not

from labkit.atomic import write_atomic  # noqa: E402  (labkit.atomic imports no torch: --dry-run needs none)

# Each step's time limit on one H100, in seconds (planned: no GPU has run them yet): 530 in all,
# and 10 s more for stopping the last step, within --limit's 9 minutes (ddp runs only with two
# GPUs; with one, 485 s are planned). --step-limit changes one.
BUDGET_S = {"environment": 15, "bench_lstm": 90, "bench_transformer": 120, "bf16": 35, "fp16": 35,
            "notebook_04": 80, "notebook_05": 110, "ddp": 45}
FAMILIES = ("lstm", "transformer")
STEPS = tuple(BUDGET_S)
NOTEBOOKS = {"notebook_04": "04_rnn_vs_transformer", "notebook_05": "05_finetuning_sst2"}
KILL_GRACE_S = 10  # after SIGTERM, before SIGKILL
TAIL = 3000  # characters of a failed step's output kept in the JSON


class Refusal(Exception):
    """A wrong argument or a machine this check cannot run on: one line, and an exit status."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


@dataclass
class Step:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    read: Callable[[Step, Path], dict[str, Any]] | None = None  # the step's figures, from its files or output
    output: Path | None = None  # the file the step writes, for `read`
    note: str = ""  # when it runs only sometimes

    def shell(self) -> str:
        return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in self.env.items()), shlex.join(self.command)])


# --- the plan -----------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise Refusal(message)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="gpu.sh", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--out", default="runs/gpu-check.json", help="where the JSON goes (default: %(default)s)")
    p.add_argument("--budget", help="the bench's training time per variant for the perplexity comparison "
                                    "(default: 20s; 2s at --size tiny)")
    p.add_argument("--target-ppl", default="150", help="the validation perplexity the bench times (default: %(default)s)")
    p.add_argument("--size", default="medium", choices=("medium", "classic", "tiny"),
                   help="the bench's presets (default: %(default)s); tiny: every step at tiny sizes")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N; cpu only to check this script (--size tiny)")
    p.add_argument("--limit", default="540", help="stop the whole check after this many seconds (default: %(default)s)")
    p.add_argument("--scale", help="the notebooks' LABKIT_SCALE: the fraction of their profile's training lengths "
                                   "(default: 0.01 of the gpu profile; 0.5 of the smoke one at --size tiny)")
    p.add_argument("--only", help=f"comma-separated steps to run, from {', '.join(STEPS)} (default: all)")
    p.add_argument("--step-limit", action="append", default=[], metavar="STEP=SECONDS",
                   help="another time limit for one step (repeatable), e.g. bench_transformer=300")
    p.add_argument("--work", help="keep the runs, logs and executed notebooks here (default: a temporary folder, removed)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and every command, run nothing")
    return p


def checked(args: argparse.Namespace) -> argparse.Namespace:
    if not args.limit.isdigit() or int(args.limit) < 1:
        raise Refusal(f"--limit must be whole seconds, not '{args.limit}'")
    args.limit = int(args.limit)
    if args.device == "cpu" and args.size != "tiny":
        raise Refusal("--device cpu is for checking this script at --size tiny; use 'labkit bench' on CPUs")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        raise Refusal(f"--device must be cuda, cuda:N or cpu, not '{args.device}'")
    tiny = args.size == "tiny"
    args.budget = args.budget or ("2s" if tiny else "20s")
    args.scale = args.scale or ("0.5" if tiny else "0.01")
    try:
        scale = float(args.scale)
    except ValueError:
        scale = math.nan
    if not 0 < scale <= 1:
        raise Refusal(f"--scale must be a fraction in (0, 1], not '{args.scale}'")
    args.only = tuple(args.only.split(",")) if args.only else STEPS
    if set(args.only) - set(STEPS):
        raise Refusal(f"--only: unknown step(s) {', '.join(sorted(set(args.only) - set(STEPS)))}; "
                      f"choose from {', '.join(STEPS)}")
    args.limits = dict(BUDGET_S)
    for item in args.step_limit:
        name, _, seconds = item.partition("=")
        if name not in STEPS or not seconds.isdigit() or int(seconds) < 1:
            raise Refusal(f"--step-limit wants STEP=SECONDS with a step from {', '.join(STEPS)}, not '{item}'")
        args.limits[name] = int(seconds)
    return args


def plan(args: argparse.Namespace, work: Path) -> list[Step]:
    """Every step the check runs, in order, with its command (no step is run here)."""
    python, tiny = os.path.abspath(sys.executable), args.size == "tiny"
    labkit = [python, "-m", "labkit"]
    bench = [*labkit, "bench", "--size", args.size, "--device", args.device, "--variants", "reference,default,compile",
             "--budget-variants", "default,compile", "--budget", args.budget, "--target-ppl", args.target_ppl,
             *(["--eval-tokens", "2000", "--window", "0.5", "--windows", "2", "--evals", "2", "--gen-tokens", "16"] if tiny
               else ["--windows", "3", "--evals", "5", "--gen-tokens", "256"])]
    # a short pretraining: the demo Transformer on WikiText-2 for 20 s, or the tiny one on the synthetic corpus
    length = (["--preset", "tiny", "--corpus", "synthetic", "--steps", "10", "--eval-tokens", "2000"] if tiny else
              ["--preset", "demo", "--time-budget", "20"])
    pretrain = [*labkit, "pretrain", "--model", "transformer", *length, "--log-every", "5", "--no-progress",
                "--runs-dir", str(work / "runs")]
    steps = [Step("environment", [python, str(Path(__file__).resolve()), "--environment", args.device],
                  read=read_environment)]
    for family in FAMILIES:  # one process each: a family that runs out of time leaves the other's figures
        out = work / f"bench-{family}.json"
        steps.append(Step(f"bench_{family}", [*bench, "--families", family, "--out", str(out)], read=read_bench, output=out))
    for precision in ("bf16", "fp16"):
        steps.append(Step(precision, [*pretrain, "--device", args.device, "--precision", precision, "--name", precision],
                          read=read_training, output=work / "runs" / precision))
    profile = {"LABKIT_PROFILE": "smoke" if tiny else "gpu", "LABKIT_SCALE": args.scale,
               "LABKIT_RUNS": str(work / "notebook-runs"), "LABKIT_OFFLINE": "1"}
    for name, notebook in NOTEBOOKS.items():
        steps.append(Step(name, [python, "-m", "labkit.notebook_exec", str(ROOT / "notebooks" / f"{notebook}.ipynb"),
                                 "--json", str(work / f"{name}.json")],
                          env=profile, read=read_notebook, output=work / f"{name}.json"))
    torchrun = [python, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={free_port()}", "-m", "labkit"]
    steps.append(Step("ddp", [*torchrun, *pretrain[3:], "--device", "cpu" if args.device == "cpu" else "cuda",
                              "--name", "ddp"], env={"TMPDIR": str(work)},  # torchrun's torchelastic_* folder
                      read=read_training, output=work / "runs" / "ddp",
                      note="" if args.device == "cpu" else "with 2 GPUs or more"))
    return [s for s in steps if s.name in args.only or s.name == "environment"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- running a step -----------------------------------------------------------------------------
def run_step(step: Step, timeout: float, log: Path) -> dict[str, Any]:
    """Run `step` in a process group of its own (torchrun's workers and the notebook runner go
    with it), stopped at `timeout` seconds: SIGTERM, then SIGKILL. Its output goes to `log`."""
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(step.command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=os.environ | step.env, cwd=ROOT, start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
            stop(proc)
    text = log.read_text(errors="replace")
    record: dict[str, Any] = {"ok": code == 0, "seconds": round(time.monotonic() - start, 1), "timeout_s": round(timeout),
                              "returncode": code}
    if code is None:
        record["error"] = f"stopped at its time limit of {timeout:.0f} s"
    elif code != 0:
        record["error"] = f"exit status {code}"
    if step.read is not None:
        try:
            figures = step.read(step, log)
        except Exception as e:  # the step's files missing or unreadable: a failure of the step, said
            figures = {"ok": False, "read_error": f"{type(e).__name__}: {e}"}
        read_ok = figures.pop("ok", True)
        record["ok"] = record["ok"] and read_ok
        assert not set(figures) & set(record), f"{step.name}: a figure named like the step's own fields"
        record.update(figures)
    if not record["ok"]:
        record["output_tail"] = text[-TAIL:]
    return record


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group (labkit's training saves a checkpoint and stops), SIGKILL to
    whatever is left of it KILL_GRACE_S later. A notebook's kernel, in a session of its own, exits
    when it sees its parent gone (ipykernel's parent poller)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(KILL_GRACE_S)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# --- reading each step's figures -----------------------------------------------------------------
def read_environment(step: Step, log: Path) -> dict[str, Any]:
    return {"facts": json.loads(log.read_text().strip().splitlines()[-1])}


def read_bench(step: Step, log: Path) -> dict[str, Any]:
    return {"result": json.loads(step.output.read_text())}


def read_training(step: Step, log: Path) -> dict[str, Any]:
    """The run's card and last training loss; ok when it finished in the precision asked for with
    a finite loss (and, for fp16, a loss scale)."""
    from labkit.runs import RunDir, run_metrics

    card = RunDir(step.output).read_card()
    losses = [r["loss"] for r in run_metrics(step.output) if "loss" in r]
    keys = ("status", "precision", "device", "processes", "steps", "tokens_seen", "tokens_per_s", "wall_time_s",
            "best_val_loss", "best_val_ppl", "test_ppl", "loss_scale", "skipped_steps", "stopped_by")
    figures = {k: card.get(k) for k in keys} | {"final_loss": losses[-1] if losses else None}
    asked = step.command[step.command.index("--precision") + 1] if "--precision" in step.command else None
    figures["ok"] = (card.get("status") == "finished" and figures["final_loss"] is not None
                     and math.isfinite(figures["final_loss"]) and asked in (None, card.get("precision"))
                     and (asked != "fp16" or card.get("loss_scale") is not None)
                     and (step.name != "ddp" or card.get("processes") == 2))
    return figures


def read_notebook(step: Step, log: Path) -> dict[str, Any]:
    """labkit.notebook_exec's record; its `seconds` (the cells') and `error` (a cell's) renamed."""
    record = json.loads(step.output.read_text())
    record["notebook_seconds"], record["cell_error"] = record.pop("seconds"), record.pop("error")
    return record


def compile_rows(steps: dict[str, Any], families: list[str]) -> dict[str, Any]:
    """The benches' torch.compile rows beside their default path's (the `compile` record)."""
    rows, missing = {}, []
    for family in families:
        bench = steps.get(f"bench_{family}", {})
        if not bench.get("ok"):
            missing.append(family)
            continue
        f = bench["result"]["families"][family]
        compiled, default = f["variants"].get("compile"), f["variants"].get("default", {})
        if compiled is None:
            return {"ok": False, "error": f"no compile row for {family} in its bench"}
        rows[family] = {"tokens_per_s": compiled["tokens_per_s"], "default_tokens_per_s": default.get("tokens_per_s"),
                        "speedup_over_default": (compiled["tokens_per_s"] / default["tokens_per_s"]
                                                 if default.get("tokens_per_s") else None),
                        "speedup_over_reference": compiled.get("speedup_tokens_per_s"),
                        "val_ppl": compiled.get("budget", {}).get("val_ppl"),
                        "time_to_target_ppl_s": compiled.get("time_to_target_ppl_s"),
                        "default_time_to_target_ppl_s": default.get("time_to_target_ppl_s")}
    record: dict[str, Any] = {"ok": not missing, "families": rows}
    if missing:
        record["error"] = "no bench for " + ", ".join(missing) + " (see steps.bench_<family>)"
    return record


def why_skipped(step: Step, facts: dict[str, Any] | None, device: str) -> str | None:
    """The reason a step does not run on this machine, or None."""
    if facts is None:
        return None
    if step.name == "ddp" and device != "cpu" and facts["gpu_count"] < 2:
        return f"{facts['gpu_count']} GPU: the two-process run needs two"
    if step.name == "bf16" and device == "cpu" and not facts["cpu_bf16"]:
        return "this CPU has no native bf16 (AVX-512 BF16 or AMX): labkit refuses bf16 here"
    if step.name == "bf16" and device != "cpu" and not facts["gpus"][int(device.partition(":")[2] or 0)]["bf16"]:
        return "this GPU has no native bf16 (compute capability below 8.0): labkit trains in fp16 there"
    return None


def environment(device: str) -> dict[str, Any]:
    """The machine's facts (the environment step, in a process of its own)."""
    import platform

    import torch

    from labkit import __version__
    from labkit.device import cpu_has_bf16, cuda_has_bf16

    cuda = torch.cuda.is_available()
    gpus = []
    for i in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                     "memory_gib": round(props.total_memory / 2**30, 1), "bf16": cuda_has_bf16(torch.device("cuda", i)),
                     "multiprocessors": props.multi_processor_count})
    nccl = torch.cuda.nccl.version() if cuda and hasattr(torch.cuda, "nccl") else None
    return {"device": device, "cuda_available": cuda, "gpu_count": len(gpus), "gpus": gpus,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
            "labkit": __version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu_bf16": cpu_has_bf16(), "hostname": platform.node(),
            "data": os.environ.get("LABKIT_DATA")}


# --- the check ----------------------------------------------------------------------------------
def check(args: argparse.Namespace) -> int:
    dry = args.dry_run
    work = Path(args.work or (Path(tempfile.gettempdir()) / "labkit-gpu-check" if dry else
                              tempfile.mkdtemp(prefix="labkit-gpu-check-"))).resolve()
    steps = plan(args, work)
    planned = sum(args.limits[s.name] for s in steps)
    print(f"gpu check: {len(steps)} steps, {planned} s planned ({', '.join(f'{s.name} {args.limits[s.name]}' for s in steps)}), "
          f"stopped at --limit {args.limit} s; work folder {work}", flush=True)
    if dry:
        for s in steps:
            print(f"\n# {s.name}: at most {args.limits[s.name]} s" + (f" ({s.note})" if s.note else "") + f"\n{s.shell()}")
        return 0
    try:
        result = run_steps(args, steps, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"results: {args.out} ({result['seconds']} s; "
          + (f"failed: {', '.join(result['failed'])})" if result["failed"] else "every step ok)"))
    return 0 if result["ok"] else 1


def run_steps(args: argparse.Namespace, steps: list[Step], work: Path) -> dict[str, Any]:
    """Run `steps` in turn within --limit, writing the JSON after each one; returns it."""
    (work / "logs").mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"check": "benchmarks/gpu_check.py", "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "arguments": {k: v for k, v in vars(args).items() if k != "dry_run"},
                              "limit_s": args.limit, "planned_s": {s.name: args.limits[s.name] for s in steps},
                              "environment": None, "steps": {}}
    benches = [s.name for s in steps if s.name.startswith("bench_")] or [None]
    start = time.monotonic()
    for step in steps:
        left = args.limit - (time.monotonic() - start) - KILL_GRACE_S  # a step stopped at its limit still ends in time
        skipped = why_skipped(step, result["environment"], args.device)
        if skipped:
            record = {"ok": True, "skipped": skipped}
        elif left < 5:
            record = {"ok": False, "error": f"not run: the --limit of {args.limit} s was spent"}
        else:
            record = {"command": step.shell(), **run_step(step, min(args.limits[step.name], left),
                                                          work / "logs" / f"{step.name}.log")}
        result["steps"][step.name] = record
        print(f"[{step.name}] {outcome(record)}", flush=True)
        if step.name == "environment":
            result["environment"] = record.get("facts")
            if result["environment"] and args.device != "cpu" and not result["environment"]["cuda_available"]:
                raise Refusal("torch sees no CUDA GPU here; run this on a GPU machine (labkit bench measures CPUs)", 3)
        if step.name == benches[-1]:
            result["steps"]["compile"] = compile_rows(result["steps"], [b.removeprefix("bench_") for b in benches])
            print(f"[compile] {outcome(result['steps']['compile'])}", flush=True)
        result["seconds"] = round(time.monotonic() - start, 1)
        result["failed"] = [name for name, r in result["steps"].items() if not r["ok"]]
        result["ok"] = not result["failed"]
        write_atomic(out, json.dumps(result, indent=2, default=float) + "\n")  # after every step: a kill keeps the rest
    return result


def outcome(record: dict[str, Any]) -> str:
    if "skipped" in record:
        return f"skipped: {record['skipped']}"
    took = f" in {record['seconds']} s" if "seconds" in record else ""
    return ("ok" if record["ok"] else "FAILED") + took + (f": {record['error']}" if record.get("error") else "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--environment"]:  # the first step, in a process of its own
        print(json.dumps(environment(argv[1])))
        return 0
    try:
        return check(checked(parser().parse_args(argv)))
    except Refusal as e:
        print(f"gpu.sh: {e}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
