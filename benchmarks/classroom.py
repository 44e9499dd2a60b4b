"""A class on one lab: the real app server (`labkit app`) under many concurrent browser sessions.

Starts `labkit app` from a scratch folder on the demo runs, then opens N sessions at once, each a
Playwright context in Debian's Chromium, offline (every request to a host other than this machine
is aborted and counted as an error). Every session moves through Attention, Compare and Generate by
the sidebar (one Streamlit session each, as a student clicks) and presses Generate; the time from
the click to the page drawn (the script run over, every visible chart and frame drawn) is measured
for each step. Printed: errors (a timeout, an exception or error box on the page, a JavaScript
error, a blocked request), the median and 95th percentile of those times, and the server's memory
(its resident set, sampled, and the kernel's peak) after a warm-up session, then after each round
of sessions, so that growth with the number of sessions shows.

    .venv/bin/labkit demo /tmp/classroom-runs --corpus synthetic
    cpu-quiet .venv/bin/python benchmarks/classroom.py /tmp/classroom-runs --sessions 20

The browsers run on the same machine as the server here (on a 2-core machine they compete for the
cores): in a classroom each student's browser is on their own machine, so these times are an upper
bound for the server's side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from offline_browser import CHROMIUM, FLAGS, LOCAL  # noqa: E402 (the test suite's offline Chromium settings)

STEPS = (("Attention", "Attention"), ("Compare", "Compare"), ("Generate", "Generate"))  # (link, page title)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Memory:
    """The server's resident set, sampled every 50 ms, and the kernel's high-water mark (VmHWM)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def read(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.read())
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def start_server(root: Path, port: int, log: Path) -> subprocess.Popen:
    """`labkit app` from a scratch folder (no .streamlit/ there), on `root`; waits until it answers."""
    cwd = Path(tempfile.mkdtemp(prefix="classroom-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")} | {"HOME": str(cwd)}
    server = subprocess.Popen([sys.executable, "-m", "labkit", "app", "--port", str(port), "--runs-dir", str(root)],
                              cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server ended: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return server
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the server did not answer within 120 s")


async def session(browser, base: str, timeout_ms: int, times: dict[str, list[float]], errors: list[str]) -> None:
    """One student: open the app, then Attention, Compare, Generate (and press it), timing each."""
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
        for link, title in STEPS:
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


async def round_of(n: int, base: str, timeout_ms: int) -> tuple[dict[str, list[float]], list[str], float]:
    from playwright.async_api import async_playwright

    times: dict[str, list[float]] = {}
    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        start = time.perf_counter()
        await asyncio.gather(*(session(browser, base, timeout_ms, times, errors) for _ in range(n)))
        wall = time.perf_counter() - start
        await browser.close()
    return times, errors, wall


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the runs folder: `labkit demo ROOT --corpus synthetic`")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent browser sessions (default: 20)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of that many sessions (default: 2)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds a page may take to draw")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    load_before = os.getloadavg()
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="classroom-log-")) / "server.log"
    server = start_server(args.root.resolve(), port, log)
    memory = Memory(server.pid)
    base = f"http://127.0.0.1:{port}"
    timeout_ms = int(args.timeout * 1000)
    report: dict = {"sessions": args.sessions, "rounds": args.rounds, "memory_mib": {}}
    try:
        report["memory_mib"]["started"] = memory.read() / 2**20
        _, warm_errors, _ = asyncio.run(round_of(1, base, timeout_ms))  # loads the models into the shared caches
        report["memory_mib"]["after 1 warm-up session"] = memory.read() / 2**20
        times: dict[str, list[float]] = {}
        errors = list(warm_errors)
        for r in range(args.rounds):
            got, problems, wall = asyncio.run(round_of(args.sessions, base, timeout_ms))
            for step, values in got.items():
                times.setdefault(step, []).extend(values)
            errors += problems
            report["memory_mib"][f"after round {r + 1} ({args.sessions} sessions, {wall:.0f} s)"] = memory.read() / 2**20
        report["memory_mib"]["peak (sampled)"] = memory.peak / 2**20
        report["memory_mib"]["peak (kernel VmHWM)"] = memory.read("VmHWM") / 2**20
    finally:
        memory.stop()
        server.terminate()
        server.wait(timeout=30)
    every = [t for values in times.values() for t in values]
    report |= {"errors": len(errors), "error_lines": errors[:20], "samples": len(every),
               "median_s": statistics.median(every) if every else None,
               "p95_s": percentile(every, 0.95) if every else None,
               "by_step": {step: {"n": len(v), "median_s": statistics.median(v), "p95_s": percentile(v, 0.95)}
                           for step, v in times.items()},
               "load_average_before": load_before, "load_average_after": os.getloadavg()}
    print(f"{args.sessions} concurrent sessions x {args.rounds} rounds, {len(every)} timed steps: "
          f"{len(errors)} errors")
    for line in errors[:20]:
        print(f"  error: {line}")
    if every:
        print(f"time to a drawn page: median {report['median_s']:.2f} s, p95 {report['p95_s']:.2f} s")
        for step, figures in report["by_step"].items():
            print(f"  {step:20s} n={figures['n']:3d}  median {figures['median_s']:.2f} s  p95 {figures['p95_s']:.2f} s")
    for what, mib in report["memory_mib"].items():
        print(f"server memory {what}: {mib:,.0f} MiB")
    print("load average before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
        *load_before, *report["load_average_after"]))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
