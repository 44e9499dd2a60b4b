"""A view shared by its link, in a real browser (`streamlit run` on 127.0.0.1, Debian's Chromium
driven by Playwright, every other host blocked): on the Attention page pick a run, type a
sentence, open the fine-tuning tab and pick a head; the address bar then holds all of it, and the
sidebar's link is that address. A fresh browser opened on the link draws the same view: the same
widgets showing the same values, the same open tab, the same figures (titles and data). The
link is copied with the link box's own button. The browser's back button steps back to the view
before the last choice; a control inside a fragment rewrites the link too.

Needs /usr/bin/chromium and the `playwright` package, as tests/browser/test_browser.py."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest

import appruns
from offline_browser import CHROMIUM, offline_page, problems, settle, streamlit_server, wait_idle

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(),
                                 reason="no /usr/bin/chromium: install Debian's chromium "
                                        "(apt-get install -y chromium; .ci/run does) to run the browser test")]
WIDTH, HEIGHT = 1600, 1400
SENTENCE = "the old king that the robots follow sings ."

# What the page shows: each select box's label and value (its input's), the sentence, the open tab, and every
# figure's title and data as plotly drew them (typed arrays as plain lists).
_SHOWN = """() => {
    const plain = (k, v) => ArrayBuffer.isView(v) ? Array.from(v) : v;
    const bare = (t) => typeof t === "string" ? t.replaceAll("<b>", "").replaceAll("</b>", "") : t;
    const main = document.querySelector('[data-testid="stMain"]');
    const plots = [...main.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')];
    const tab = main.querySelector('[role="tab"][aria-selected="true"]');
    return {
        selects: [...main.querySelectorAll('[data-testid="stSelectbox"]')].map(s =>
            [s.innerText, ...[...s.querySelectorAll('input')].map(i => i.value)]),
        sentence: (main.querySelector('textarea') || {}).value,
        tab: tab ? tab.innerText : null,
        // Streamlit's theme wraps a title in <b> each time it styles the figure: twice after some reruns
        figures: plots.map(p => JSON.parse(JSON.stringify({
            title: bare(((p.layout || {}).title || {}).text),
            data: (p.data || []).map(t => ({name: t.name, x: t.x, y: t.y, z: t.z}))}, plain))),
    };
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = appruns.runs_root(tmp_path_factory)
    with streamlit_server(root, tmp_path_factory.mktemp("streamlit")) as s:
        yield s.base


def link_box(page) -> str:
    """The link the sidebar shows under "Link to this view"."""
    return page.locator('[data-testid="stSidebar"] [data-testid="stCode"]').last.inner_text().strip()


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(url).query, keep_blank_values=True)


def difference_drawn(page, head: str | None = None) -> None:
    """Until the fine-tuning tab's difference map is drawn (for `head`, "layer L, head H", if given)."""
    page.wait_for_function("""(head) => [...document.querySelectorAll('.js-plotly-plot')].some(p =>
        p.layout && p.layout.title && (p.layout.title.text || '').includes('before and after fine-tuning')
        && (!head || p.layout.title.text.includes(head + ':')))""", arg=head, timeout=60_000)
    wait_idle(page)


def head_shown(page) -> str:
    """The Head box's value: "layer L, head H"."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=re.compile(r"^Head"))
    return re.search(r"layer \d+, head \d+", box.locator("input").input_value()).group(0)


def test_a_shared_link_opens_the_same_view_in_a_fresh_browser(server):
    with offline_page(WIDTH, HEIGHT) as first:
        page = first.page
        page.goto(server + "/attention")
        page.get_by_role("heading", name="Attention", exact=True).wait_for(timeout=60_000)
        wait_idle(page)
        page.get_by_test_id("stSelectbox").filter(has_text="Transformer run").first.click()
        page.get_by_role("option", name=appruns.TRANSFORMER, exact=True).click()
        settle(page)
        box = page.get_by_label("Sentence (type your own)")
        box.fill(SENTENCE)
        box.press("Control+Enter")
        settle(page)
        page.get_by_role("tab", name="fine-tuning", exact=True).click()
        settle(page)
        difference_drawn(page)
        before = page.url
        default_head = head_shown(page)
        # another head than the one the tab opens on (the most changed)
        page.get_by_test_id("stSelectbox").filter(has_text=re.compile(r"^Head")).click()
        page.get_by_role("option").nth(2).click()
        settle(page)
        head = head_shown(page)
        assert head != default_head
        difference_drawn(page, head)

        url = page.url
        assert urlparse(url).path == "/attention"
        q = query(url)
        assert q["run"] == [appruns.TRANSFORMER] and q["text"] == [SENTENCE] and q["tab"] == ["fine-tuning"]
        layer, number = re.match(r"layer (\d+), head (\d+)", head).groups()
        assert q["ft_head"] == [f"L{layer}H{number}"] and q["ft_run"] == [appruns.CLASSIFIER_TF]
        assert link_box(page) == url  # the sidebar's link is the address
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_test_id("stCode").last.hover()
        sidebar.get_by_role("button", name="Copy to clipboard").last.click()  # its copy button
        page.wait_for_function("async (u) => (await navigator.clipboard.readText()) === u", arg=url, timeout=10_000)
        shared = page.evaluate("navigator.clipboard.readText()")
        shown = page.evaluate(_SHOWN)
        assert shown["tab"] == "fine-tuning" and shown["sentence"] == SENTENCE
        assert any(f"{head}: before and after fine-tuning" in (f["title"] or "") for f in shown["figures"])
        assert len(shown["figures"]) == 2 and all(f["data"] for f in shown["figures"])
        assert not problems(page) and not first.blocked and not first.errors, (first.blocked, first.errors)

        # The back button: the view before the head was picked.
        page.go_back()
        page.wait_for_function("(h) => document.location.href === h", arg=before, timeout=30_000)
        settle(page)
        difference_drawn(page, default_head)
        assert head_shown(page) == default_head and link_box(page) == before

    with offline_page(WIDTH, HEIGHT) as fresh:  # another browser: nothing of the first session
        page = fresh.page
        page.goto(shared)
        page.get_by_role("heading", name="Attention", exact=True).wait_for(timeout=60_000)
        difference_drawn(page, head)
        assert page.evaluate(_SHOWN) == shown  # the same widgets, tab and figures, number for number
        assert query(page.url) == q and link_box(page) == shared
        assert not problems(page) and not fresh.blocked and not fresh.errors, (fresh.blocked, fresh.errors)


def test_a_control_inside_a_fragment_rewrites_the_link_too(server):
    """Watch it learn's step slider lives in a fragment (it follows a live run), which reruns alone
    when the slider moves: the address bar and the sidebar's link follow it all the same."""
    with offline_page(WIDTH, HEIGHT) as view:
        page = view.page
        page.goto(server + f"/learn?run={appruns.TRANSFORMER}")
        page.get_by_text("One line per head").first.wait_for(timeout=60_000)
        wait_idle(page)
        assert query(page.url)["step"] == ["16"] and query(link_box(page))["step"] == ["16"]  # the last evaluation
        slider = page.get_by_role("slider").first
        slider.focus()
        slider.press("ArrowLeft")
        page.wait_for_function("() => document.location.search.includes('step=8')", timeout=30_000)
        wait_idle(page)
        page.get_by_text("Step 8", exact=True).wait_for()
        assert query(link_box(page)) == query(page.url) == {"run": [appruns.TRANSFORMER], "step": ["8"],
                                                            "statistic": ["induction"]}
        assert not view.blocked and not view.errors, (view.blocked, view.errors)
