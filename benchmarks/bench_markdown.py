"""The tables of docs/benchmarks.md, from the JSON `labkit bench` writes (or the GPU check's,
benchmarks/gpu_check.py, which holds a bench per family):

    python benchmarks/bench_markdown.py runs/bench-classic.json
"""

from __future__ import annotations

import json
import sys
from typing import Any


def fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    fp32, bf16 = m.get("matmul_peak_fp32"), m.get("matmul_peak_bf16")
    lines = [f"Machine: {m.get('gpu') or m.get('processor')}, {m['threads']} thread(s), torch {m['torch']}; "
             f"measured matrix-multiply peak {fmt(fp32 and fp32 / 1e9)} GFLOP/s fp32, "
             f"{fmt(bf16 and bf16 / 1e9)} GFLOP/s bf16; 1-minute load average {m.get('load_1min_start', 0):.1f} "
             f"at the start, {m.get('load_1min_end', 0):.1f} at the end.", "",
             "| model | variant | precision | output | parameters | tokens/s | x reference | peak RSS (MB) "
             "| GFLOP/s | % fp32 peak | % bf16 peak | val ppl after budget | time to reference ppl | eval tokens/s |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for family, f in result["families"].items():
        for name, r in f["variants"].items():
            achieved = r.get("achieved_flops_per_s")
            budget = r.get("budget", {})
            reached, frac = r.get("time_to_reference_ppl_s"), r.get("time_to_reference_ppl_fraction")
            when = "-" if "budget" not in r else ("not reached" if reached is None else f"{reached:.0f} s ({frac:.0%})")
            lines.append(
                f"| {family} | {name} | {r['precision']} | {r.get('output', 'softmax')} | {r['parameters']:,} "
                f"| {r['tokens_per_s']:,.0f} | {fmt(r.get('speedup_tokens_per_s'), '.2f')} | {fmt(r.get('peak_rss_mb'))} "
                f"| {fmt(achieved and achieved / 1e9, '.1f')} | {fmt(achieved and fp32 and 100 * achieved / fp32, '.0f')} "
                f"| {fmt(achieved and bf16 and 100 * achieved / bf16, '.0f')} | {fmt(budget.get('val_ppl'), ',.1f')} "
                f"| {when} | {fmt(r.get('eval_tokens_per_s'))} |")
    lines += ["", "| model | new tokens | context | KV cache tokens/s | recompute tokens/s | speed-up | same text |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for family, f in result["families"].items():
        g = f.get("generation")
        if g:
            lines.append(f"| {family} | {g['new_tokens']} | {fmt(g.get('context_length'))} "
                         f"| {g['cached_tokens_per_s']:,.1f} | {fmt(g.get('recompute_tokens_per_s'), ',.1f')} "
                         f"| {fmt(g.get('speedup'), '.1f')} | {g.get('same_text', '-')} |")
    return "\n".join(lines)


def benches(check: dict[str, Any]) -> dict[str, Any]:
    """The GPU check's benches (one per family) as one bench's result: the first one's machine."""
    results = [step["result"] for name, step in check["steps"].items() if name.startswith("bench_") and "result" in step]
    if not results:
        sys.exit("no bench finished in this GPU check")
    return results[0] | {"families": {k: v for r in results for k, v in r["families"].items()}}


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        result = json.load(f)
    print(markdown(benches(result) if "steps" in result else result))
