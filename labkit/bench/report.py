"""`labkit bench`'s report: the table it prints and the JSON it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labkit.atomic import write_atomic


def _fmt(value: Any, spec: str = ",.0f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    peaks = [p for p in (m.get("matmul_peak_fp32"), m.get("matmul_peak_bf16"))]
    lines = [f"machine: {m.get('gpu') or m.get('processor')}, {m['threads']} threads, torch {m['torch']}; "
             f"matmul peak fp32 {_fmt(peaks[0] and peaks[0] / 1e9)} GFLOP/s, "
             f"bf16 {_fmt(peaks[1] and peaks[1] / 1e9)} GFLOP/s"]
    head = (f"{'family':<12}{'variant':<10}{'prec':<6}{'params':>12}{'tok/s':>10}{'x ref':>7}{'peak MB':>9}"
            f"{'GFLOP/s':>9}{'%fp32':>7}{'%bf16':>7}{'val ppl':>9}{'t->ref':>8}{'eval tok/s':>11}")
    lines += [head, "-" * len(head)]
    for family, f in result["families"].items():
        for name, r in f["variants"].items():
            achieved = r.get("achieved_flops_per_s")
            frac = r.get("time_to_reference_ppl_fraction")
            lines.append(
                f"{family:<12}{name:<10}{r['precision']:<6}{r['parameters']:>12,}{r['tokens_per_s']:>10,.0f}"
                f"{_fmt(r.get('speedup_tokens_per_s'), '.2f'):>7}{_fmt(r.get('peak_rss_mb')):>9}"
                f"{_fmt(achieved and achieved / 1e9, ',.1f'):>9}"
                f"{_fmt(achieved and peaks[0] and 100 * achieved / peaks[0], '.0f'):>7}"
                f"{_fmt(achieved and peaks[1] and 100 * achieved / peaks[1], '.0f'):>7}"
                f"{_fmt(r.get('budget', {}).get('val_ppl'), ',.1f'):>9}"
                f"{_fmt(frac, '.0%'):>8}{_fmt(r.get('eval_tokens_per_s')):>11}")
        g = f.get("generation")
        if g:
            text = f"  generation, {g['new_tokens']} new tokens: cached {g['cached_tokens_per_s']:,.1f} tokens/s"
            if "recompute_tokens_per_s" in g:
                text += (f", recomputing {g['recompute_tokens_per_s']:,.1f} tokens/s ({g['speedup']:.1f}x, "
                         f"same text: {g['same_text']})")
            lines.append(text)
    return "\n".join(lines)


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(result, indent=2, default=float) + "\n")
    return path
