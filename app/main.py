"""labkit app: `streamlit run app/main.py`. Pages call labkit; they hold no model code."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from labkit import __version__
from labkit.rundir import list_runs

st.set_page_config(page_title="labkit", layout="wide")
st.title("labkit runs")
st.caption(f"labkit {__version__}: pretrain and fine-tune RNN and Transformer language models")

root = Path(st.sidebar.text_input("Runs folder", value="runs"))
runs = list_runs(root)
if not runs:
    st.info(f"No runs in `{root}` yet. Train one with `labkit pretrain --preset tiny` "
            "(or `--preset tiny --model transformer`), then reload this page.")
else:
    rows = []
    for info in runs:
        card = info.card or {}
        model = (info.config or {}).get("model", {})
        rows.append({"run": info.path.name,
                     "model": model.get("cell", model.get("family", "?")),
                     "status": "unreadable" if info.error else card.get("status", "?"),
                     "parameters": card.get("parameters"),
                     "steps": card.get("steps"),
                     "best val ppl": card.get("best_val_ppl"),
                     "test ppl": card.get("test_ppl"),
                     "problem": info.error or ""})
    st.dataframe(rows, hide_index=True, width="stretch")
