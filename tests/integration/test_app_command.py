"""`labkit app` started from a folder without `.streamlit/config.toml`: the real Streamlit server
listens on 127.0.0.1 alone (read from the kernel's socket table) and tells the browser that usage
statistics are off (read from the first message of a real session over Streamlit's websocket)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs process `pid` listens on, over IPv4 and IPv6 (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            if table == "tcp":
                host = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:  # four 32-bit words, each in the kernel's byte order
                host = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            found.add((host, int(port, 16)))
    return found


def first_session_message(port: int):
    """Open a session as the browser does and return its NewSession message."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"],
                 origin=f"http://127.0.0.1:{port}", open_timeout=30) as ws:
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        ws.send(rerun.SerializeToString())
        for _ in range(200):
            msg = ForwardMsg()
            msg.ParseFromString(ws.recv(timeout=60))
            if msg.WhichOneof("type") == "new_session":
                return msg.new_session
    raise AssertionError("no new_session message")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the socket table from Linux /proc")
def test_labkit_app_from_another_folder_is_local_only_without_usage_statistics(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert not (elsewhere / ".streamlit").exists()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    server = subprocess.Popen([sys.executable, "-m", "labkit", "app", "--port", str(port), "--runs-dir",
                               str(tmp_path / "runs"), "--theme.base", "dark"], cwd=elsewhere,
                              env=env | {"HOME": str(tmp_path)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up in 120 s"
                time.sleep(0.5)
        assert listening(server.pid) == {("127.0.0.1", port)}
        session = first_session_message(port)
        assert session.config.gather_usage_stats is False
        assert session.custom_theme.base == 1  # --theme.base dark was passed on to Streamlit (1: DARK)
        assert Path(session.main_script_path) == Path(__file__).resolve().parents[2] / "app" / "main.py"
    finally:
        server.terminate()
        server.wait(timeout=30)
