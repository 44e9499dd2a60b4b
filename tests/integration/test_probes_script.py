"""The script behind docs/results.md's probe tables, run at its quick size in a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_probes_benchmark_quick_writes_its_json(tmp_path):
    out = tmp_path / "probes.json"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "probes.py"), "--quick", "--out", str(out),
                           "--runs", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result) >= {"setup", "agreement", "copy", "command"}
    for task, key in (("agreement", "distance"), ("copy", "length")):
        runs = result[task]["runs"]
        assert set(runs) == {"lstm", "transformer"}
        for run in runs.values():
            assert {"parameters", "tokens", "flops_per_token", "wall_time_s", "best_val_loss"} <= set(run["budget"])
            assert run["scores"] and all({key, "count", "accuracy"} <= set(r) for r in run["scores"])
        tokens = {run["budget"]["tokens"] for run in runs.values()}
        params = [run["budget"]["parameters"] for run in runs.values()]
        assert max(tokens) - min(tokens) <= 0.01 * max(tokens) and max(params) < 1.05 * min(params)
    for induction in result["copy"]["runs"]["transformer"]["induction"].values():
        layers, heads = len(induction["scores"]), len(induction["scores"][0])
        assert 0.0 <= induction["max"] <= 1.0 and layers >= 1 and 0 <= induction["head"][1] < heads
