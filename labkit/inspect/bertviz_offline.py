"""bertviz's head view and model view as self-contained HTML that draws with no network.

bertviz (1.4) returns HTML that loads require.js from a CDN, then asks require.js for d3 5.7.0
and jQuery from a CDN: offline it draws nothing. The same libraries ship inside Python packages
we already depend on: mpld3 carries `mpld3/js/d3.v5.min.js` (d3 5.7.0) and xstatic-jquery
carries jQuery. So the page gets both inline, plus a few-line stand-in for require.js that hands
bertviz the two globals (d3 and jQuery register as globals when no AMD `define` exists).

Each view also gets two buttons that save what it drew, for slides and papers: the SVG as it is
on screen (a white background added), or a PNG at twice its size, drawn from that SVG on a canvas.
Both happen in the browser: nothing is fetched or sent.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from pathlib import Path

import torch

from labkit.errors import LabkitError
from labkit.inspect.attention import AttentionCapture

_REQUIRE_TAG = re.compile(r'<script src="[^"]*require(?:\.min)?\.js"></script>')
_REQUIRE_CONFIG = re.compile(r"require\.config\(\{.*?\}\);", re.S)
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.M)

# bertviz calls require.config({...}) and requirejs(['jquery', 'd3'], function ($, d3) {...}).
AMD_SHIM = """
(function () {
  var modules = {jquery: window.jQuery, d3: window.d3};
  function requirejs(deps, callback) {
    callback.apply(null, deps.map(function (name) {
      if (!(name in modules)) { throw new Error("offline bertviz: no module " + name); }
      return modules[name];
    }));
  }
  requirejs.config = function () {};
  window.require = window.requirejs = requirejs;
})();
"""


@functools.cache
def d3_source() -> str:
    """d3 5.7.0, from the mpld3 package."""
    text = (importlib.resources.files("mpld3") / "js" / "d3.v5.min.js").read_text(encoding="utf-8")
    if "v5.7.0" not in text[:200]:
        raise LabkitError("mpld3's d3.v5.min.js is not d3 5.7.0; bertviz needs that version")
    return _SOURCE_MAP.sub("", text)


@functools.cache
def jquery_source() -> str:
    """jQuery, from the xstatic-jquery package."""
    import xstatic.pkg.jquery as xjquery

    return _SOURCE_MAP.sub("", (Path(xjquery.BASE_DIR) / "jquery.min.js").read_text(encoding="utf-8"))


# Serialise the view's one <svg> (bertviz draws each view into `#vis svg`) and download it, or draw
# it on a canvas at 2x and download that as PNG.
EXPORT_JS = """
(function () {
  var NS = "http://www.w3.org/2000/svg";
  function snapshot() {
    var svg = document.querySelector("#vis svg");
    var box = svg.getBoundingClientRect();
    var copy = svg.cloneNode(true);
    copy.setAttribute("xmlns", NS);
    copy.setAttribute("width", Math.ceil(box.width));
    copy.setAttribute("height", Math.ceil(box.height));
    copy.setAttribute("font-family", "Helvetica Neue, Helvetica, Arial, sans-serif");
    var paper = document.createElementNS(NS, "rect");
    paper.setAttribute("width", "100%");
    paper.setAttribute("height", "100%");
    paper.setAttribute("fill", "white");
    copy.insertBefore(paper, copy.firstChild);
    return {text: new XMLSerializer().serializeToString(copy), width: Math.ceil(box.width), height: Math.ceil(box.height)};
  }
  function save(blob, name) {
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 5000);
  }
  window.labkitSaveSvg = function (name) {
    save(new Blob([snapshot().text], {type: "image/svg+xml"}), name + ".svg");
  };
  window.labkitSavePng = function (name) {
    var s = snapshot(), img = new Image();
    var url = URL.createObjectURL(new Blob([s.text], {type: "image/svg+xml"}));
    img.onload = function () {
      var canvas = document.createElement("canvas");
      canvas.width = 2 * s.width;
      canvas.height = 2 * s.height;
      var g = canvas.getContext("2d");
      g.scale(2, 2);
      g.drawImage(img, 0, 0);
      URL.revokeObjectURL(url);
      canvas.toBlob(function (blob) { save(blob, name + ".png"); }, "image/png");
    };
    img.src = url;
  };
})();
"""
EXPORT_BAR_PX = 36  # the buttons' row under the view


def _export_bar(name: str) -> str:
    button = ('<button type="button" onclick="labkit{fn}(\'{name}\')" style="font:13px sans-serif;margin-right:6px;'
              'padding:3px 10px;border:1px solid #d0d7de;border-radius:6px;background:#f6f8fa;cursor:pointer">'
              'Save {label}</button>')
    return ('<div class="labkit-export" style="margin:6px 0 0 0">'
            + button.format(fn="SaveSvg", name=name, label="SVG") + button.format(fn="SavePng", name=name, label="PNG (2x)")
            + "</div>")


def _script(source: str) -> str:
    # Inside <script>, "</" could end the element early (say, a token "</script>" in the
    # attention data); "<\/" means the same in JS strings and regexes.
    return "<script>" + source.replace("</", "<\\/").replace("<!--", "<\\!--") + "</script>"


def make_offline(bertviz_html: str, name: str = "bertviz") -> str:
    """A whole HTML document from bertviz's `html_action='return'` output, with no CDN use, and
    buttons that save the view as `name`.svg or `name`.png."""
    body, found = _REQUIRE_TAG.subn("", bertviz_html)
    if not found:
        raise LabkitError("unexpected bertviz HTML (no require.js tag): is bertviz 1.4 installed?")
    body = _REQUIRE_CONFIG.sub("", body, count=1)
    start = body.index('<script type="text/javascript">')
    end = body.rindex("</script>")
    vis_html, vis_js = body[:start], body[start + len('<script type="text/javascript">'):end]
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            "<style>body{margin:0;padding:4px;background:#fff;color:#222}</style></head><body>"
            + _script(d3_source()) + _script(jquery_source()) + _script(AMD_SHIM)
            + vis_html + _script(vis_js) + _export_bar(name) + _script(EXPORT_JS) + "</body></html>")


def _rounded(capture: AttentionCapture) -> list[torch.Tensor]:
    # 4 decimals are plenty for line opacities and keep the page small.
    return [torch.round(t, decimals=4) for t in capture.as_torch()]


def head_view_html(capture: AttentionCapture, layer: int = 0) -> str:
    """bertviz `head_view`: lines from each token to the tokens it attends to, per layer."""
    from bertviz import head_view

    html = head_view(attention=_rounded(capture), tokens=list(capture.tokens), layer=layer,
                     html_action="return")
    return make_offline(html.data, "labkit-head-view")


def head_view_height(capture: AttentionCapture) -> int:
    """Pixels the head view needs: bertviz draws 22.5 px per token under its controls, then the
    export buttons. (The app sizes its frame to the content; a notebook's frame needs this.)"""
    return int(len(capture.tokens) * 22.5 + 90 + EXPORT_BAR_PX)


def model_view_html(capture: AttentionCapture) -> str:
    """bertviz `model_view`: a thumbnail of every layer and head."""
    from bertviz import model_view

    html = model_view(attention=_rounded(capture), tokens=list(capture.tokens), display_mode="light",
                      html_action="return")
    return make_offline(html.data, "labkit-model-view")


def model_view_height(capture: AttentionCapture) -> int:
    """Pixels bertviz's model view needs (its own layout rule in bertviz 1.4's model_view.js):
    one row of thumbnails per layer, each token 7 * 12 / heads px tall, or the detail panel."""
    tokens, layers, heads = len(capture.tokens), capture.n_layers, capture.n_heads
    rows = layers * (tokens * 7 * 12 / heads + 10) + 38
    detail = tokens * 18 + 55
    return int(max(rows, detail) + 40 + EXPORT_BAR_PX)
