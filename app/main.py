"""labkit app: `streamlit run app/main.py`. Pages (app/views/, not pages/: with a pages/ folder
Streamlit would also serve each page on its own, without this file) call labkit; they hold no
model code."""

from __future__ import annotations

import streamlit as st

from labkit import __version__

import common
import pagemap
from panels import ui

st.set_page_config(page_title="labkit", layout="wide")
common.serve_here_only()  # a server started without an address answers other machines with a refusal

PAGES = [st.Page(file, title=title, default=i == 0) for i, (file, title, _) in enumerate(pagemap.PAGES)]

page = st.navigation(PAGES)
common.sidebar()
ui.export_choice()
st.sidebar.caption(f"labkit {__version__}: pretrain and fine-tune RNN and Transformer language models")
page.run()
