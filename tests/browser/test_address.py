"""`streamlit run app/main.py` started from a folder without labkit's .streamlit/config.toml listens
on every network interface (Streamlit's default): the app itself then refuses a page asked for from
another address, and says how to serve a class; this machine is served as usual. Checked in a real
Chromium against the machine's own network address (no other machine is needed)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from offline_browser import APP, CHROMIUM, free_port, offline_page, serving, wait_idle

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium")]


def own_address() -> str | None:
    """An IPv4 address of this machine other than the loopback, if it has one."""
    import psutil

    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


def test_a_server_started_without_an_address_serves_this_machine_only(tmp_path: Path) -> None:
    address = own_address()
    if address is None:
        pytest.skip("this machine has no network address but the loopback")
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]  # no --server.address
    env = {"LABKIT_RUNS": str(tmp_path / "runs"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    with serving(command, cwd=tmp_path, env=env, log_path=tmp_path / "server.log",
                 ready_url=f"http://{address}:{port}/_stcore/health", what="streamlit"), \
            offline_page(1400, 1000, allow={address}) as view:
        page = view.page
        page.goto(f"http://{address}:{port}/")  # from the network: refused
        page.get_by_text("serves this machine only").first.wait_for(timeout=60_000)
        wait_idle(page)
        assert not page.get_by_text("A path through it").count()
        assert "labkit app --server.address 0.0.0.0" in page.inner_text("body")
        page.goto(f"http://127.0.0.1:{port}/")  # from this machine: the app
        page.get_by_text("A path through it").first.wait_for(timeout=60_000)
        assert not page.get_by_text("serves this machine only").count()
        assert not view.errors and not view.blocked, (view.errors, view.blocked)
