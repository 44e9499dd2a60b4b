"""How many CPU threads torch trains with: torch's default less the cores other work keeps busy
(labkit.device.cpu_threads), and LABKIT_THREADS / OMP_NUM_THREADS to choose (use_cpu_threads)."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch

from labkit import device as devices
from labkit.errors import LabkitError


@pytest.mark.parametrize("load, cores, default, threads", [
    (0.0, 2, 2, 2),    # a quiet 2-core laptop: torch's default
    (0.4, 2, 2, 2),    # rounds to no busy core
    (1.3, 2, 2, 1),    # one core busy: the other one
    (2.6, 2, 2, 1),    # more work than cores: still one thread
    (1.7, 4, 4, 2),    # a busy core and most of another: rounded to 2 busy
    (3.0, 8, 4, 4),    # 8 logical cores (4 physical), 3 busy: torch's default fits in the 5 free
    (5.4, 8, 4, 3),    # 5 busy: the 3 left
])
def test_threads_are_the_default_less_the_busy_cores(load, cores, default, threads):
    assert devices.cpu_threads(load=load, cores=cores, default=default) == threads


@pytest.fixture
def threads_kept(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(devices.THREADS_ENV, raising=False)
    yield
    torch.set_num_threads(before)


def test_labkit_threads_chooses_and_torch_gives_torchs_default(monkeypatch, threads_kept):
    monkeypatch.setenv(devices.THREADS_ENV, "3")
    assert devices.use_cpu_threads() == "3 (from LABKIT_THREADS)" and torch.get_num_threads() == 3
    monkeypatch.setattr(devices, "_TORCH_THREADS", 5)
    monkeypatch.setenv(devices.THREADS_ENV, "torch")
    assert devices.use_cpu_threads().startswith("5 (torch's default") and torch.get_num_threads() == 5
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(devices.THREADS_ENV, bad)
        with pytest.raises(LabkitError, match="LABKIT_THREADS must be a number of threads"):
            devices.use_cpu_threads()


STAT = """cpu  {} 0 {} {} {} 0 0 0 0 0
cpu0 0 0 0 0 0 0 0 0 0 0
cpu1 0 0 0 0 0 0 0 0 0 0
intr 0
"""


def test_busy_cores_is_the_share_of_cpu_time_not_idle_times_the_cores():
    before = STAT.format(100, 50, 800, 50)  # user, system, idle, iowait
    after = STAT.format(160, 70, 900, 70)  # +60 user, +20 system, +100 idle, +20 iowait: 80 of 200 busy
    assert devices.busy_between(before, after) == pytest.approx(2 * 80 / 200)
    assert devices.busy_between(before, STAT.format(200, 150, 800, 50)) == pytest.approx(2.0)  # nothing idle
    with pytest.raises(ValueError):
        devices.busy_between(before, before)  # no time between the readings
    with pytest.raises(ValueError):
        devices.busy_between("intr 0\n", after)


def test_busy_cores_reads_this_machine_or_falls_back_to_the_load_average(monkeypatch, tmp_path):
    monkeypatch.setattr(devices.os, "getloadavg", lambda: (1.7, 1.0, 1.0))
    assert devices.busy_cores(0.01, str(tmp_path / "no-such-stat")) == 1.7
    if not Path("/proc/stat").exists():
        return
    spinner = multiprocessing.get_context("spawn").Process(target=spin, daemon=True)
    spinner.start()
    try:
        time.sleep(1.0)  # it is running
        busy = devices.busy_cores(0.5)
    finally:
        spinner.terminate()
        spinner.join()
    assert 0.5 <= busy <= os.cpu_count() + 0.01  # at least most of the spinning core, read from /proc/stat
    assert busy != 1.7  # (not the load average)


def spin() -> None:
    while True:
        pass


def test_unset_it_follows_the_busy_cores_and_omp_num_threads_is_left_alone(monkeypatch, threads_kept):
    monkeypatch.setattr(devices, "busy_cores", lambda: 1.2)
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(devices, "_TORCH_THREADS", 2)
    said = devices.use_cpu_threads()
    assert torch.get_num_threads() == 1 and said.startswith("1 of 2 cores, 1.2 busy") and "LABKIT_THREADS=N" in said
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert devices.use_cpu_threads().startswith("2 (OMP_NUM_THREADS is set") and torch.get_num_threads() == 2
