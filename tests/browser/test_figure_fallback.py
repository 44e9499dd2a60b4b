"""The HTML fallback of labkit's figures, drawn in a real Chromium as a hosted notebook draws an
output it has no plotly renderer for (Colab, Kaggle): the output's text/html alone, each in its own
frame, plotly.js fetched from its CDN. Here the CDN's address is answered with the plotly.js that
the plotly package ships (the same version), every other request outside this machine is blocked."""

from __future__ import annotations

import html
from pathlib import Path

import plotly
import pytest

from offline_browser import CHROMIUM, chart_marks, offline_page

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium")]

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def hosted_page(outputs: list[str]) -> str:
    """A page with each output's HTML in its own frame, as Colab shows a cell's outputs."""
    frames = "".join(f'<iframe srcdoc="{html.escape(o, quote=True)}" style="width:900px;height:480px"></iframe>'
                     for o in outputs)
    return f"<!doctype html><html><body>{frames}</body></html>"


def test_live_curves_and_notebook_figures_draw_from_their_html_alone(monkeypatch):
    import plotly.io as pio

    from labkit import notebook as nbk
    from labkit.inspect.plots import learning_curve_figure
    from labkit.notebook_display import house_style

    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    monkeypatch.setattr(pio.templates, "default", pio.templates.default)
    house_style()
    live = nbk.LiveCurves(x="step", display=False)
    run = live.callback("lstm")
    for step, loss in enumerate([6.0, 5.5, 5.2, 5.0], start=1):
        run.on_step(None, {"step": step, "tokens": step * 100, "elapsed_s": step / 10, "loss": loss})
    run.on_eval(None, {"step": 4, "tokens": 400, "elapsed_s": 0.4, "val_loss": 5.1})
    curve = live._bundle()["text/html"]
    figure = learning_curve_figure([{"condition": c, "train_size": n, "accuracy": a} for c, n, a in (
        ("pretrained", 100, 0.55), ("pretrained", 1000, 0.68), ("scratch", 100, 0.51), ("scratch", 1000, 0.683))])
    shown = pio.renderers._build_mime_bundle(figure.to_dict())  # what fig.show() sends to the front end
    assert set(shown) == {"application/vnd.plotly.v1+json", "text/html"}

    with offline_page(1000, 1100) as view:
        page = view.page
        page.route("https://cdn.plot.ly/**", lambda r: r.fulfill(path=str(PLOTLY_JS),
                                                                 content_type="application/javascript"))
        page.route("https://cdnjs.cloudflare.com/**", lambda r: r.fulfill(body="", content_type="application/javascript"))
        page.set_content(hosted_page([curve, shown["text/html"]]))
        frames = [f for f in page.frames if f != page.main_frame]
        assert len(frames) == 2
        for frame in frames:
            frame.wait_for_function("() => document.querySelector('.js-plotly-plot .main-svg') !== null",
                                    timeout=30_000)
        drawn = [frame.evaluate("() => document.querySelector('.js-plotly-plot').data.map("
                                "t => [t.name, (t.x || []).length])") for frame in frames]
        marks = [chart_marks(frame) for frame in frames]
    assert drawn[0] == [["lstm", 4], ["lstm val", 1]]
    assert {"pretrained", "scratch"} <= {name for name, _ in drawn[1]}
    assert all(m and all(c["marks"] > 0 for c in m) for m in marks), marks
    assert not view.errors and not view.blocked, (view.errors, view.blocked)
