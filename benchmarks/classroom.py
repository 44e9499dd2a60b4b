"""A class on one lab: the real app server under many concurrent student sessions, measured at the
server (Streamlit's own websocket protocol), not at the browsers.

By default every student is a protocol client (`ProtocolSession`): one websocket to
/_stcore/stream, speaking Streamlit's protobuf messages (BackMsg up, ForwardMsg down) as the
browser does, with no browser, so the 2 cores are the server's. Each student opens the app (Start),
then Runs, Attention, types a sentence there, opens Compare and Generate, sets a seed and presses
Generate (40 tokens, <eos> off, by default side by side on two runs as the page proposes). Timed for
every step: from the request sent (a page, a changed widget, a click) to the server's
script_finished message for it; for the Generate press also the first generated token (the first
streamed "▌" text in a delta) and the last one. N sessions run at once (asyncio, one process), R
rounds of them, after one warm-up session. Errors: an exception element or an error box in any run,
a script that failed to compile, a page not found, a lost connection, a timeout, and a generation of
another length than asked (read from the page's own caption and token chart). Printed: p50, p95
and max per step, the goals, the server's memory (resident set, sampled, and the kernel's peak,
VmHWM) and the load average before the run; `--out` writes it all as JSON.

    .venv/bin/labkit demo /tmp/classroom-runs --corpus synthetic
    .venv/bin/python benchmarks/classroom.py /tmp/classroom-runs --sessions 20 --rounds 3 --out /tmp/c20.json
    .venv/bin/python benchmarks/classroom.py /tmp/classroom-runs --sessions 50 --rounds 1 --out /tmp/c50.json

Before/after in one interleaved run: `--compare DIR` serves DIR's app (a git worktree of an older
commit: `git worktree add /tmp/labkit-before COMMIT`, or `mkdir /tmp/labkit-before && git archive
COMMIT | tar -x -C /tmp/labkit-before`) from a second server, with DIR's labkit, and the rounds
alternate between the two servers (A B, then B A, ...), so that both see the same machine:

    .venv/bin/python benchmarks/classroom.py /tmp/classroom-runs --sessions 20 --rounds 3 \\
        --compare /tmp/labkit-before --out /tmp/c20-before-after.json

`--browser` keeps the first version of this benchmark as a smoke check: Playwright contexts in
Debian's Chromium, offline, through Attention, Compare and Generate. There the browsers share the
cores with the server, so its times are an upper bound for the server's side. `--url` measures a
server already running (its memory with `--pid`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]

# The settings `labkit app` passes: local only, no usage statistics, no browser opened.
LOCAL_ONLY = ("--server.address", "127.0.0.1", "--browser.serverAddress", "127.0.0.1",
              "--server.headless", "true", "--browser.gatherUsageStats", "false")

# A student's path: the steps timed, in order. "page": a request answered by one script run
# (request -> script_finished); the Generate press has three times.
PAGE_STEPS = ("Start (connect)", "Runs", "Attention", "Attention: sentence typed", "Compare", "Generate",
              "Generate: settings")
FIRST_TOKEN, LAST_TOKEN, GENERATED = "Generate: first token", "Generate: last token", "Generate: finished"
STEPS = (*PAGE_STEPS, FIRST_TOKEN, LAST_TOKEN, GENERATED)
GOALS = {"page": 5.0, FIRST_TOKEN: 5.0, GENERATED: 15.0}  # p95, seconds (issue #31)

SENTENCE_LABEL = "Sentence (type your own)"
SEED_LABEL, EOS_LABEL, LENGTH_LABEL, GENERATE_LABEL = "seed", "stop at <eos> (end of line)", "length (tokens)", "Generate"
STREAMING = "▌"  # the Generate page's cursor after the text streamed so far
CAPTION = re.compile(r"^(\d+) tokens at [\d,.]+ tokens/s; stopped by (.+)\.$")
SHOWN = " **→** "  # the Generate page's result line: prompt **→** text


def sentence(i: int) -> str:
    """A different sentence for every student (800 of them), in words of both demo corpora."""
    names = ("mia", "leo", "sam", "eva", "tom", "ana", "zoe", "ben")
    verbs = ("sees", "helps", "follows", "likes", "finds")
    things = ("old dog", "small bird", "happy child", "tired horse", "clever robot")
    places = ("near the river", "behind the school", "beside the market", "outside the castle")
    return f"{names[i % 8]} {verbs[i // 8 % 5]} the {things[i // 40 % 5]} {places[i // 200 % 4]} ."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Memory:
    """A process's resident set, sampled every 50 ms, and the kernel's high-water mark (VmHWM)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def read(self, field: str = "VmRSS") -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            rss = self.read()
            if not rss:
                return
            self.peak = max(self.peak, rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- the server ---------------------------------------------------------------------------------

class Server:
    """`streamlit run APP_DIR/app/main.py` with APP_DIR's labkit (PYTHONPATH first), on `root`,
    from a scratch folder (no .streamlit/ found), with `labkit app`'s settings; or one at `url`."""

    def __init__(self, label: str, root: Path | None = None, app_dir: Path = REPO, url: str | None = None,
                 pid: int | None = None, log_dir: Path | None = None, class_mode: bool = False):
        self.label, self.process, self.log, self.scratch = label, None, None, None
        if url:
            self.url = url.rstrip("/")
        else:
            port = free_port()
            scratch = Path(tempfile.mkdtemp(prefix="classroom-"))
            self.log = (log_dir or scratch) / f"server-{label}.log"
            self.scratch = scratch if log_dir else None  # removed at stop unless it holds the log
            env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
            env |= {"HOME": str(scratch), "LABKIT_RUNS": str(root.resolve()),
                    "PYTHONPATH": os.pathsep.join([str(app_dir.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
            script = app_dir.resolve() / "app" / "main.py"
            if not script.is_file():
                raise SystemExit(f"no app in {app_dir}: {script} is missing")
            settings = [*LOCAL_ONLY, "--server.port", str(port)]
            if class_mode:  # what `labkit app --class` sets
                env |= {"LABKIT_CLASS": "1", "OMP_NUM_THREADS": "1"}
                settings += ["--server.fileWatcherType", "none"]
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(script), *settings],
                cwd=scratch, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
            self.url = f"http://127.0.0.1:{port}"
            pid = self.process.pid
        self.wait_ready()
        self.memory = Memory(pid) if pid else None

    def wait_ready(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SystemExit(f"the server ({self.label}) ended: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        return
            except OSError:
                time.sleep(0.3)
        raise SystemExit(f"the server ({self.label}) did not answer within {seconds:.0f} s")

    def mib(self, field: str = "VmRSS") -> float | None:
        return self.memory.read(field) / 2**20 if self.memory else None

    def cpu_s(self) -> float | None:
        """The CPU time the server process has used so far (user + system), from /proc."""
        if not self.memory:
            return None
        try:
            fields = Path(f"/proc/{self.memory.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.memory:
            self.memory.stop()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


# --- the protocol client ------------------------------------------------------------------------

class ProtocolError(Exception):
    """The session cannot go on: a timeout, a lost connection, a widget that is not on the page."""


class Drawn:
    """What one request made the server send, up to its script_finished: the elements of the last
    script run by delta path, the problems shown, and when the request was sent and answered."""

    def __init__(self, step: str, sent: float):
        self.step, self.sent = step, sent
        self.elements: dict[tuple[int, ...], Any] = {}  # delta path -> Element (the last run's)
        self.streamed: dict[tuple[int, ...], str] = {}  # delta path -> the last "▌" text there
        self.first_stream: float | None = None  # seconds after `sent`
        self.last_stream: float | None = None
        self.seconds: float | None = None  # to the script_finished
        self.problems: list[str] = []

    def of_kind(self, kind: str) -> list[tuple[tuple[int, ...], Any]]:
        return [(p, getattr(e, kind)) for p, e in sorted(self.elements.items()) if e.WhichOneof("type") == kind]


class ProtocolSession:
    """One browser tab, as Streamlit's frontend speaks to the server: connect to /_stcore/stream,
    ask for a page (BackMsg.rerun_script with a ClientState: the page's script hash, the widget
    values), read the ForwardMsgs (new_session, navigation, deltas) up to script_finished. Widgets
    are found by their label in the deltas, and set by echoing their id in WidgetStates. Keeps the
    frontend's message cache (cacheable messages, sent back as cached_message_hashes; the server then
    sends only a reference to them). Records per step the seconds from the request to its
    script_finished in `times`, and every problem in `problems`."""

    def __init__(self, url: str, timeout: float = 120, keep: bool = False):
        self.url, self.timeout = url.rstrip("/"), timeout
        self.ws = None
        self.pages: dict[str, tuple[str, str]] = {}  # title and url path -> (page_script_hash, url path)
        self.page = ""  # the url path of the page shown
        self.widgets: dict[str, Any] = {}  # widget id -> WidgetState: the values set on this page
        self.last: Drawn | None = None
        self.times: dict[str, float] = {}
        self.problems: list[str] = []
        self.drawn: dict[str, Drawn] = {}  # step -> what it drew, with `keep` (a test reads them)
        self.keep = keep
        self._cache: dict[str, list] = {}  # hash -> [ForwardMsg, the request it was last used in]
        self._requests, self._max_age = 0, 2
        self.from_cache = 0  # messages the server sent as a reference to this cache

    # the connection
    async def connect(self, page: str = "", step: str = "Start (connect)") -> Drawn:
        """Open a websocket (a new session) and ask for `page` (its url path; "" is the default page)."""
        from websockets.asyncio.client import connect

        start = time.perf_counter()
        ws_url = "ws" + self.url[len("http"):] + "/_stcore/stream"
        try:
            self.ws = await asyncio.wait_for(connect(ws_url, subprotocols=["streamlit"], max_size=None,
                                                     max_queue=None, open_timeout=None), self.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise ProtocolError(f"{step}: cannot connect ({type(e).__name__}: {e})") from e
        self.page = page
        return await self._request(step, start, page_name=page)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    # what a student does
    async def open(self, page: str, step: str | None = None) -> Drawn:
        """Go to a page by its title or url path, as a click in the sidebar does."""
        if page not in self.pages:
            raise ProtocolError(f"{step or page}: no page {page!r} in the navigation ({', '.join(self.pages)})")
        page_hash, path = self.pages[page]
        self.widgets.clear()  # the frontend forgets the widgets of the page it leaves
        self.page = path
        return await self._request(step or page, time.perf_counter(), page_hash=page_hash)

    def widget(self, label: str, kind: str | None = None) -> tuple[str, Any]:
        """The (element kind, proto) of the one widget on the page with this label."""
        found = []
        for e in (self.last.elements.values() if self.last else ()):
            k = e.WhichOneof("type")
            proto = getattr(e, k)
            fields = proto.DESCRIPTOR.fields_by_name
            if "id" in fields and "label" in fields and proto.label == label and proto.id and kind in (None, k):
                found.append((k, proto))
        if len(found) != 1:
            raise ProtocolError(f"{len(found)} widgets labelled {label!r} on the page {self.page or '(default)'}")
        return found[0]

    async def set(self, values: dict[str, Any], step: str) -> Drawn:
        """Give widgets new values (by label) and rerun, as the frontend does after an edit."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        for label, value in values.items():
            kind, proto = self.widget(label)
            state = WidgetState(id=proto.id)
            if kind in ("text_input", "text_area", "selectbox", "radio"):
                if kind in ("selectbox", "radio") and not isinstance(value, str):
                    value = proto.options[value]
                state.string_value = value
            elif kind == "number_input":
                if proto.data_type == proto.INT:
                    state.int_value = int(value)
                else:
                    state.double_value = float(value)
            elif kind in ("checkbox",):  # st.checkbox and st.toggle
                state.bool_value = bool(value)
            elif kind == "slider":
                state.double_array_value.data[:] = [float(v) for v in (value if isinstance(value, list) else [value])]
            else:
                raise ProtocolError(f"{step}: setting a {kind} ({label!r}) is not implemented")
            self.widgets[proto.id] = state
        return await self._request(step, time.perf_counter(), page_hash=self.pages.get(self.page, ("", ""))[0])

    async def click(self, label: str, step: str, streamed: bool = False) -> Drawn:
        """Press a button: its trigger value is true for this one run (the frontend does not send it again)."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        _, proto = self.widget(label, "button")
        if proto.disabled:
            raise ProtocolError(f"{step}: the button {label!r} is disabled")
        trigger = WidgetState(id=proto.id, trigger_value=True)
        return await self._request(step, time.perf_counter(), page_hash=self.pages.get(self.page, ("", ""))[0],
                                   extra=[trigger], streamed=streamed)

    # the protocol
    async def _request(self, step: str, start: float, *, page_name: str = "", page_hash: str = "",
                       extra: list | None = None, streamed: bool = False) -> Drawn:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = ""
        state.page_name = page_name
        state.page_script_hash = page_hash
        state.widget_states.widgets.extend([*self.widgets.values(), *(extra or [])])
        self._requests += 1
        for key in [k for k, (_, used) in self._cache.items() if self._requests - used > self._max_age]:
            del self._cache[key]
        state.cached_message_hashes.extend(self._cache)
        drawn = Drawn(step, start)
        try:
            await self.ws.send(msg.SerializeToString())
            await asyncio.wait_for(self._read(drawn, streamed), self.timeout - (time.perf_counter() - start))
        except asyncio.TimeoutError as e:
            raise ProtocolError(f"{step}: no script_finished within {self.timeout:.0f} s") from e
        except Exception as e:  # a closed connection
            if isinstance(e, ProtocolError):
                raise
            raise ProtocolError(f"{step}: {type(e).__name__}: {str(e)[:200]}") from e
        self.times[step] = drawn.seconds
        self.problems += [f"{step}: {p}" for p in drawn.problems]
        self.last = drawn
        if self.keep:
            self.drawn[step] = drawn
        live = {getattr(e, e.WhichOneof("type")).id for e in drawn.elements.values()
                if "id" in getattr(e, e.WhichOneof("type")).DESCRIPTOR.fields_by_name}
        self.widgets = {k: v for k, v in self.widgets.items() if k in live}
        return drawn

    async def _read(self, drawn: Drawn, streamed: bool) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        while True:
            msg = ForwardMsg()
            msg.ParseFromString(await self.ws.recv())
            now = time.perf_counter() - drawn.sent
            if msg.HasField("ref_hash"):
                cached = self._cache.get(msg.ref_hash)
                if cached is None:
                    raise ProtocolError(f"{drawn.step}: the server referred to a message not cached here")
                cached[1] = self._requests
                self.from_cache += 1
                ref, msg = msg, ForwardMsg()
                msg.CopyFrom(cached[0])
                msg.metadata.CopyFrom(ref.metadata)
            elif msg.hash and msg.metadata.cacheable:
                self._cache[msg.hash] = [msg, self._requests]
            kind = msg.WhichOneof("type")
            if kind == "new_session":  # a script run starts: the page is drawn afresh
                drawn.elements.clear()
                self._max_age = msg.new_session.config.max_cached_message_age or self._max_age
            elif kind == "navigation":
                for p in msg.navigation.app_pages:
                    self.pages[p.page_name] = self.pages[p.url_pathname] = (p.page_script_hash, p.url_pathname)
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                path, element = tuple(msg.metadata.delta_path), msg.delta.new_element
                drawn.elements[path] = element
                what = element.WhichOneof("type")
                if what == "exception":
                    drawn.problems.append(f"exception {element.exception.type}: {element.exception.message[:300]}")
                elif what == "alert" and element.alert.format == element.alert.ERROR:
                    drawn.problems.append(f"error box: {element.alert.body[:300]}")
                elif streamed and what == "markdown" and element.markdown.body.endswith(STREAMING):
                    drawn.streamed[path] = element.markdown.body[:-len(STREAMING)].rstrip()
                    drawn.first_stream = drawn.first_stream if drawn.first_stream is not None else now
                    drawn.last_stream = now
            elif kind == "page_not_found":
                drawn.problems.append(f"page not found: {msg.page_not_found.page_name!r}")
            elif kind == "session_event" and msg.session_event.HasField("script_compilation_exception"):
                drawn.problems.append(f"script compilation error: {msg.session_event.script_compilation_exception.message}")
            elif kind == "script_finished":
                status = msg.script_finished
                if status == msg.FINISHED_WITH_COMPILE_ERROR:
                    drawn.problems.append("the script did not compile")
                if status in (msg.FINISHED_SUCCESSFULLY, msg.FINISHED_WITH_COMPILE_ERROR):
                    drawn.seconds = now
                    return
                # FINISHED_EARLY_FOR_RERUN (st.rerun: a new run follows), a fragment's run: go on


# --- a student's path ----------------------------------------------------------------------------

def generations(drawn: Drawn) -> dict[tuple[int, ...], dict[str, Any]]:
    """The Generate page's results, by column: the token count its caption gives, the points of its
    token-probability chart, the text shown after the prompt, and the text streamed into it."""
    out: dict[tuple[int, ...], dict[str, Any]] = {}
    for path, md in drawn.of_kind("markdown"):
        column = path[:-1]
        if m := CAPTION.match(md.body):
            out.setdefault(column, {})["tokens"] = int(m.group(1))
            out[column]["stopped by"] = m.group(2)
        elif SHOWN in md.body:
            out.setdefault(column, {})["shown"] = md.body.split(SHOWN, 1)[1]
    for path, chart in drawn.of_kind("plotly_chart"):
        column = path[:-1]
        if column in out and "points" not in out[column]:
            try:
                out[column]["points"] = len(json.loads(chart.spec)["data"][0]["x"])
            except (ValueError, KeyError, IndexError, TypeError):
                out[column]["points"] = None
    for path, text in drawn.streamed.items():
        out.setdefault(path[:-1], {})["streamed"] = text
    return out


class Student:
    """One student's path through the app, over one session: times per step, problems, what Generate made."""

    def __init__(self, number: int, url: str, timeout: float, tokens: int = 40, keep: bool = False):
        self.number, self.url, self.timeout, self.tokens, self.keep = number, url, timeout, tokens, keep
        self.seed = 1 + number
        self.drawn: dict[str, Drawn] = {}  # with `keep`: what each step drew
        self.times: dict[str, float] = {}
        self.errors: list[str] = []
        self.generated: dict[tuple[int, ...], dict[str, Any]] = {}
        self.sentence = sentence(number)

    async def run(self) -> Student:
        s = ProtocolSession(self.url, self.timeout, keep=self.keep)
        try:
            await s.connect("")
            await s.open("Runs")
            await s.open("Attention")
            await s.set({SENTENCE_LABEL: self.sentence}, "Attention: sentence typed")
            await s.open("Compare")
            await s.open("Generate")
            await s.set({SEED_LABEL: self.seed, EOS_LABEL: False, LENGTH_LABEL: self.tokens}, "Generate: settings")
            pressed = await s.click(GENERATE_LABEL, GENERATED, streamed=True)
            self.check(pressed)
        except ProtocolError as e:
            self.errors.append(str(e))
        except Exception as e:  # a bug here: counted, the other students go on
            self.errors.append(f"client: {type(e).__name__}: {e}")
        finally:
            self.times |= s.times
            self.drawn = s.drawn
            self.errors[:0] = s.problems
            await s.close()
        return self

    def check(self, pressed: Drawn) -> None:
        if pressed.first_stream is not None:
            self.times[FIRST_TOKEN], self.times[LAST_TOKEN] = pressed.first_stream, pressed.last_stream
        else:
            self.errors.append(f"{GENERATED}: no token was streamed")
        self.generated = generations(pressed)
        results = {c: g for c, g in self.generated.items() if "tokens" in g}
        if not results:
            self.errors.append(f"{GENERATED}: no result shown")
        for g in results.values():
            if not (g["tokens"] == g.get("points") == self.tokens):
                self.errors.append(f"{GENERATED}: {g['tokens']} tokens in the caption, {g.get('points')} in the "
                                   f"chart, {self.tokens} asked")


async def round_of(n: int, url: str, timeout: float, tokens: int = 40, first: int = 0,
                   keep: bool = False) -> tuple[list[Student], float]:
    """N students at once, numbered from `first` (each its own sentence and seed); and the wall time."""
    start = time.perf_counter()
    students = await asyncio.gather(*(Student(first + i, url, timeout, tokens, keep).run() for i in range(n)))
    return list(students), time.perf_counter() - start


# --- the browser smoke check (--browser) ----------------------------------------------------------

BROWSER_STEPS = (("Attention", "Attention"), ("Compare", "Compare"), ("Generate", "Generate"))  # (link, page title)
DRAWN = """(title) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const h1 = document.querySelector('h1');
  if (!h1 || !h1.innerText.startsWith(title)) return false;
  const shown = e => e.offsetParent !== null;
  for (const c of document.querySelectorAll('[data-testid="stPlotlyChart"]'))
    if (shown(c) && !c.querySelector('.main-svg')) return false;
  for (const f of document.querySelectorAll('iframe'))
    if (shown(f) && !(f.contentDocument && f.contentDocument.body && f.contentDocument.body.children.length))
      return false;
  return true;
}"""
PROBLEMS = """() => [...document.querySelectorAll('[data-testid="stException"], [data-testid="stAlertContentError"]')]
  .map(e => e.innerText.slice(0, 300))"""


async def browser_session(browser, base: str, timeout_ms: int, times: dict[str, list[float]], errors: list[str]) -> None:
    """One student in Chromium: open the app, then Attention, Compare, Generate (and press it), timing
    each from the click to the page drawn (the script run over, every visible chart and frame drawn)."""
    sys.path.insert(0, str(REPO / "tests"))
    from offline_browser import LOCAL  # the test suite's offline Chromium settings

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(timeout_ms)  # every click and wait, not only the drawn pages

    async def route(r) -> None:
        url = r.request.url
        if url.startswith(("data:", "blob:", "about:")) or urlparse(url).hostname in LOCAL:
            await r.continue_()
        else:
            errors.append(f"blocked request: {url}")
            await r.abort()

    await context.route("**/*", route)
    page = await context.new_page()
    page.on("pageerror", lambda e: errors.append(f"JavaScript error: {e}"))

    async def drawn(step: str, title: str, start: float) -> None:
        try:
            await page.wait_for_function(DRAWN, arg=title, timeout=timeout_ms, polling=50)
        except Exception as e:  # a timeout: the page never drew
            errors.append(f"{step}: not drawn ({type(e).__name__})")
            return
        times.setdefault(step, []).append(time.perf_counter() - start)
        errors.extend(f"{step}: {text}" for text in await page.evaluate(PROBLEMS))

    try:
        await page.goto(base + "/", timeout=timeout_ms)
        await page.locator('[data-testid="stSidebarNav"]').wait_for(timeout=timeout_ms)
        for link, title in BROWSER_STEPS:
            start = time.perf_counter()
            await page.locator('[data-testid="stSidebarNav"] a', has_text=link).first.click()
            await drawn(link, title, start)
        start = time.perf_counter()
        await page.get_by_role("button", name="Generate").click()
        await page.get_by_text("Generation 1 at").first.wait_for(timeout=timeout_ms)  # the results' caption
        await drawn("Generate (pressed)", "Generate", start)
    except Exception as e:
        errors.append(f"session: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    finally:
        await context.close()


async def browser_round(n: int, base: str, timeout: float) -> tuple[dict[str, list[float]], list[str], float]:
    from playwright.async_api import async_playwright

    sys.path.insert(0, str(REPO / "tests"))
    from offline_browser import CHROMIUM, FLAGS

    if not CHROMIUM.exists():
        raise SystemExit("--browser needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    times: dict[str, list[float]] = {}
    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        start = time.perf_counter()
        await asyncio.gather(*(browser_session(browser, base, int(timeout * 1000), times, errors) for _ in range(n)))
        wall = time.perf_counter() - start
        await browser.close()
    return times, errors, wall


# --- the measurement and its report ---------------------------------------------------------------

class Tally:
    """One server's figures over the rounds."""

    def __init__(self, server: Server):
        self.server = server
        self.times: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.memory: dict[str, float | None] = {"started": server.mib()}
        self.rounds: list[dict[str, Any]] = []
        self.samples = 0

    def add(self, times: dict[str, list[float]], errors: list[str]) -> None:
        for step, values in times.items():
            self.times.setdefault(step, []).extend(values)
        self.errors += errors

    def summary(self, with_goals: bool = True) -> dict[str, Any]:
        if self.server.memory:
            self.memory["peak (sampled)"] = self.server.memory.peak / 2**20
            self.memory["peak (kernel VmHWM)"] = self.server.mib("VmHWM")
        by_step = {step: {"n": len(v), "p50_s": statistics.median(v), "p95_s": percentile(v, 0.95), "max_s": max(v)}
                   for step, v in sorted(self.times.items(), key=lambda kv: step_order(kv[0])) if v}
        return {"url": self.server.url, "errors": len(self.errors), "error_lines": self.errors[:40],
                "by_step": by_step, "memory_mib": self.memory, "rounds": self.rounds,
                "goals": goals(by_step) if with_goals else {}}


def step_order(step: str) -> int:
    return STEPS.index(step) if step in STEPS else len(STEPS)


def goals(by_step: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Issue #31's goals against the p95s: every page request, the first token, the whole generation."""
    out = {}
    pages = [f["p95_s"] for s, f in by_step.items() if s in PAGE_STEPS]
    if pages:
        out["page request -> script_finished, worst step's p95"] = {"p95_s": max(pages), "goal_s": GOALS["page"]}
    for step in (FIRST_TOKEN, GENERATED):
        if step in by_step:
            out[f"{step} p95"] = {"p95_s": by_step[step]["p95_s"], "goal_s": GOALS[step]}
    for figure in out.values():
        figure["met"] = figure["p95_s"] <= figure["goal_s"]
    return out


def student_round(tally: Tally, n: int, timeout: float, tokens: int, first: int) -> None:
    cpu = tally.server.cpu_s()
    students, wall = asyncio.run(round_of(n, tally.server.url, timeout, tokens, first))
    cpu = tally.server.cpu_s() - cpu if cpu is not None else None
    times: dict[str, list[float]] = {}
    for s in students:
        for step, value in s.times.items():
            times.setdefault(step, []).append(value)
    tally.add(times, [f"student {s.number}: {e}" for s in students for e in s.errors])
    tally.samples += sum(len(s.times) for s in students)
    tally.rounds.append({"sessions": n, "wall_s": wall, "errors": sum(len(s.errors) for s in students),
                         "server_cpu_s": cpu, "memory_mib": tally.server.mib()})


def print_report(report: dict[str, Any]) -> None:
    servers = report["servers"]
    labels = list(servers)
    rounds = f"{report['rounds']} round{'s' if report['rounds'] != 1 else ''}"
    load = " ".join(f"{x:.2f}" for x in report["load_average_before"])
    print(f"{report['mode']}: {report['sessions']} concurrent sessions x {rounds} per server"
          f"{' (interleaved)' if len(labels) > 1 else ''}; load average before {load}")
    steps = sorted({s for f in servers.values() for s in f["by_step"]}, key=step_order)
    head = "| step | " + " | ".join(f"{lb}: n | p50 s | p95 s | max s" for lb in labels) + " |"
    print(head)
    print("|" + " --- |" * (1 + 4 * len(labels)))
    for step in steps:
        cells = []
        for lb in labels:
            f = servers[lb]["by_step"].get(step)
            cells += [str(f["n"]), f"{f['p50_s']:.2f}", f"{f['p95_s']:.2f}", f"{f['max_s']:.2f}"] if f else ["", "", "", ""]
        print(f"| {step} | " + " | ".join(cells) + " |")
    for lb in labels:
        f = servers[lb]
        print(f"{lb} ({f['url']}): {f['errors']} errors")
        for line in f["error_lines"][:20]:
            print(f"  error: {line}")
        for what, g in f["goals"].items():
            print(f"  goal {what}: {g['p95_s']:.2f} s against {g['goal_s']:.0f} s: {'met' if g['met'] else 'MISSED'}")
        memory = ", ".join(f"{k} {v:,.0f}" for k, v in f["memory_mib"].items() if v is not None)
        print(f"  server memory (MiB): {memory or 'not measured (--url without --pid)'}")
        for i, r in enumerate(f["rounds"], 1):
            cpu = f", server CPU {r['server_cpu_s']:.1f} s" if r.get("server_cpu_s") is not None else ""
            print(f"  round {i}: {r['sessions']} sessions in {r['wall_s']:.1f} s{cpu}, {r['errors']} errors")
    print("load average after: {:.2f} {:.2f} {:.2f}; CPU of this process (the protocol clients): {:.1f} s".format(
        *report["load_average_after"], report["client_cpu_s"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("root", type=Path, nargs="?", help="the runs folder: `labkit demo ROOT --corpus synthetic`")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions (default: 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of that many sessions (default: 3)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds a step may take (default: 180)")
    parser.add_argument("--tokens", type=int, default=40, help="tokens each Generate press asks for (default: 40)")
    parser.add_argument("--app-dir", type=Path, default=REPO,
                        help="serve the app and labkit of this checkout (default: this one)")
    parser.add_argument("--compare", type=Path, metavar="OLD_APP_DIR",
                        help="also serve this checkout's app from a second server; the rounds alternate between them")
    parser.add_argument("--url", help="measure a server already running here instead of starting one")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for its memory")
    parser.add_argument("--browser", action="store_true",
                        help="the smoke check: Playwright sessions in Chromium instead of protocol clients")
    parser.add_argument("--class-mode", action="store_true",
                        help="serve this checkout as `labkit app --class` does (one thread per computation, a fixed "
                             "runs folder, no file watcher); --compare's server keeps its defaults")
    parser.add_argument("--no-warm-up", action="store_true", help="skip the one warm-up session per server")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    if not args.url and args.root is None:
        parser.error("give the runs folder (or --url of a running server)")
    if args.url and args.compare:
        parser.error("--compare starts both servers: leave out --url")

    load_before = os.getloadavg()
    servers: list[Server] = []
    try:
        if args.url:
            servers.append(Server("server", url=args.url, pid=args.pid))
        else:
            servers.append(Server("after" if args.compare else "server", args.root, args.app_dir,
                                  class_mode=args.class_mode))
            if args.compare:
                servers.append(Server("before", args.root, args.compare))
        tallies = {s.label: Tally(s) for s in servers}
        timeout = args.timeout
        for tally in tallies.values():  # loads the models into the shared caches
            if args.no_warm_up:
                continue
            if args.browser:
                _, errors, _ = asyncio.run(browser_round(1, tally.server.url, timeout))
                tally.errors += errors
            else:
                student_round(tally, 1, timeout, args.tokens, first=10_000)
                tally.rounds.pop()
                tally.times.clear()
                tally.samples = 0
            tally.memory["after 1 warm-up session"] = tally.server.mib()
        order = list(tallies.values())
        for r in range(args.rounds):
            for tally in order if r % 2 == 0 else order[::-1]:  # A B, B A, ...: both see the same drift
                if args.browser:
                    times, errors, wall = asyncio.run(browser_round(args.sessions, tally.server.url, timeout))
                    tally.add(times, errors)
                    tally.rounds.append({"sessions": args.sessions, "wall_s": wall, "errors": len(errors),
                                         "memory_mib": tally.server.mib()})
                else:
                    student_round(tally, args.sessions, timeout, args.tokens, first=r * args.sessions)
                tally.memory[f"after round {r + 1}"] = tally.server.mib()
        summaries = {label: t.summary(with_goals=not args.browser) for label, t in tallies.items()}
    finally:
        for s in servers:
            s.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {"mode": "browser (Chromium)" if args.browser else "protocol clients", "sessions": args.sessions,
              "rounds": args.rounds, "tokens": args.tokens, "servers": summaries,
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "client_cpu_s": usage.ru_utime + usage.ru_stime, "cores": os.cpu_count()}
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 1 if any(s["errors"] for s in summaries.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
