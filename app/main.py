"""labkit app: `streamlit run app/main.py`. Pages (app/views/, not pages/: with a pages/ folder
Streamlit would also serve each page on its own, without this file) call labkit; they hold no
model code."""

from __future__ import annotations

import streamlit as st

from labkit import __version__

import common

st.set_page_config(page_title="labkit", layout="wide")

PAGES = [
    st.Page("views/runs.py", title="Runs", default=True),
    st.Page("views/curves.py", title="Loss curves"),
    st.Page("views/attention.py", title="Attention"),
    st.Page("views/compare.py", title="Compare"),
    st.Page("views/generate.py", title="Generate"),
    st.Page("views/finetune.py", title="Fine-tuning"),
]

page = st.navigation(PAGES)
common.sidebar()
st.sidebar.caption(f"labkit {__version__}: pretrain and fine-tune RNN and Transformer language models")
page.run()
