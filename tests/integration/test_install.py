"""Installing labkit where students are. A fresh virtual environment stands in for a hosted notebook:
it sees the packages of this one (torch, numpy, ipykernel...) as a host's own, but not labkit. The
notebooks' set-up cell, run in a real kernel there, installs labkit from a clone with the documented
line (`pip install SOURCE`) and leaves the host's torch and numpy as they are; once labkit is
importable every notebook's set-up cell does nothing.

It builds labkit's wheel as pip does (setuptools from the package index, as `make setup` needs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def setup_cells() -> list[str]:
    return [next(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code") for p in NOTEBOOKS]


def test_every_notebook_opens_with_the_same_setup_cell():
    cells = setup_cells()
    assert len(cells) == 6 and cells[0].startswith("# Set-up.")
    assert all(cell == cells[0] for cell in cells), "the set-up cells differ: keep one text in all six notebooks"


def tracked_copy(target: Path) -> Path:
    """The repository's tracked files (as a clone has them, with this checkout's edits) in `target`."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, names.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def host_packages(target: Path) -> Path:
    """This environment's installed packages without labkit: links in one folder (its .pth files,
    which would install labkit's editable finder, left out)."""
    target.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if "labkit" not in entry.name.lower() and entry.suffix != ".pth" and entry.name != "__pycache__":
            (target / entry.name).symlink_to(entry)
    return target


def run_cells(sources: list[str], kernel: str, timeout: int = 600) -> list[str]:
    """Each cell's printed text, run in order in one real kernel; a failing cell raises."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(nb, timeout=timeout, kernel_name=kernel).execute()
    return ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") + "".join(
        o.get("data", {}).get("text/plain", "") for o in c.outputs if o.output_type != "stream") for c in nb.cells]


PROBE = """import importlib.metadata, json, labkit, numpy, torch
print(json.dumps({"labkit": labkit.__file__, "torch": torch.__file__, "numpy": numpy.__file__,
                  "version": importlib.metadata.version("labkit-lm")}))"""


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A fresh virtual environment that sees this one's packages but labkit (as a hosted notebook's
    own), with a kernel named "fresh"; the working directory holds no labkit/ folder."""
    host = host_packages(tmp_path / "host")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "fresh")], check=True)
    python = tmp_path / "fresh" / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "host.pth").write_text(f"{host}\n")
    kernels = tmp_path / "jupyter" / "kernels" / "fresh"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.chdir(tmp_path)
    check = subprocess.run([str(python), "-c", "import labkit"], capture_output=True, text=True)
    assert check.returncode != 0 and "No module named 'labkit'" in check.stderr, "labkit leaked into the fresh env"
    return site, host


@pytest.mark.slow
def test_a_fresh_environment_installs_labkit_with_the_setup_cell_and_keeps_the_hosts_torch(fresh, tmp_path,
                                                                                          monkeypatch):
    site, host = fresh
    clone = tracked_copy(tmp_path / "repository")  # not ./labkit: a namespace package
    monkeypatch.setenv("LABKIT_SOURCE", str(clone))
    printed, probe = run_cells([setup_cells()[0], PROBE], "fresh")
    assert f"installing labkit: pip install {clone}\n" in printed and "labkit is installed." in printed
    where = json.loads(probe)
    assert Path(where["labkit"]).is_relative_to(site), "labkit is not the one the set-up cell installed"
    for name in ("torch", "numpy"):  # the host's, not a new copy in the fresh environment
        assert Path(where[name]).is_relative_to(host), f"{name} was replaced: {where[name]}"
        assert not list(site.glob(f"{name}*")), f"pip installed {name} into the fresh environment"
    assert where["version"] == "0.1.0" and list(site.glob("labkit_lm-*.dist-info"))

    # Now labkit is importable: every notebook's set-up cell is a no-op (an install would fail loudly here).
    monkeypatch.setenv("LABKIT_SOURCE", str(tmp_path / "no-such-source"))
    listing = sorted(p.name for p in site.iterdir())
    assert run_cells(setup_cells(), "fresh", timeout=60) == [""] * 6
    assert sorted(p.name for p in site.iterdir()) == listing


@pytest.mark.slow
def test_the_setup_cell_says_what_to_do_when_the_source_cannot_be_installed(fresh, tmp_path, monkeypatch):
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("LABKIT_SOURCE", str(tmp_path / "no-such-folder"))
    with pytest.raises(CellExecutionError) as failed:
        run_cells([setup_cells()[0]], "fresh", timeout=120)
    assert f"could not install labkit from '{tmp_path / 'no-such-folder'}': set LABKIT_SOURCE" in str(failed.value)
