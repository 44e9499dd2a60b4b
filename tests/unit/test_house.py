"""The shape of the house (DESIGN.md): floors that import only downwards, viewers that never import
the trainer, run file names known to labkit.runs alone, modules of a readable size, no cycles.

Read from the source with `ast`, every import statement counted (those inside functions too)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_FILES = ("config.json", "tokenizer.json", "model.safetensors", "metrics.jsonl", "card.json", "state.pt")
MAX_LINES = 350

# Floors, from the ground up: a module imports from the floors below and from its own package;
# packages side by side on one floor do not import each other, but for the pairs in SIDEWAYS.
FLOORS = {
    0: ("labkit", "labkit.config", "labkit.errors", "labkit.device", "labkit.atomic",
        "labkit.presets"),
    1: ("labkit.data", "labkit.models"),
    2: ("labkit.runs",),
    3: ("labkit.train", "labkit.inspect", "labkit.generate", "labkit.interop", "labkit.notebook_display",
        "labkit.notebook_exec"),
    4: ("labkit.experiments", "labkit.demo", "labkit.bench", "labkit.recorder", "labkit.exercises"),
    5: ("labkit.cli", "labkit.__main__", "labkit.notebook", "app"),
}
SIDEWAYS = {("labkit.__main__", "labkit.cli"),  # `python -m labkit` is the command line
            ("labkit.notebook_display", "labkit.inspect"),  # it draws labkit.inspect's figures
            ("labkit.experiments", "labkit.demo"),  # the demo models' names and budget
            ("labkit.experiments", "labkit.recorder")}  # its runs record their timeline
# Viewers look at runs; they never import what trains.
VIEWERS = ("labkit.inspect", "labkit.generate", "labkit.notebook_display", "labkit.demo", "app")
# ... but the Train page, which starts training: through the server's queue, and its jobs alone.
TRAINS = {("app.views.train", "labkit.train.queue"), ("app.views.train", "labkit.train.jobs")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    files = [*(ROOT / "labkit").rglob("*.py"), *(ROOT / "app").rglob("*.py")]
    return {module_name(p): p for p in files if "__pycache__" not in p.parts}


def imports(path: Path, known: set[str], top_level_only: bool = False) -> set[str]:
    """The labkit (and app) modules `path` imports; app pages' `import common` is app.common."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import submodule` depends on the submodule (pkg/__init__ runs first anyway)
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known]
            names = subs if len(subs) == len(node.names) else [node.module, *subs]
        for name in names:
            name = "app.common" if name == "common" else name
            if name in known:
                found.add(name)
    return found


def floor(module: str) -> int:
    """The floor of the longest entry of FLOORS that `module` is (or is inside of)."""
    matches = [(len(p), level) for level, prefixes in FLOORS.items() for p in prefixes
               if module == p or (p != "labkit" and module.startswith(p + "."))]
    assert matches, f"{module} is on no floor: add it to FLOORS"
    return max(matches)[1]


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def group(module: str) -> str:
    """The package (or top module) a module belongs to: labkit.train, labkit.inspect, app, ..."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "labkit" and len(parts) > 1 else parts[0]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = sources()
    return {name: imports(path, set(mods)) for name, path in mods.items()}


def test_every_import_goes_down_a_floor_or_stays_in_its_package(graph):
    wrong = []
    for source, targets in graph.items():
        for target in targets:
            up, level = floor(target) > floor(source), floor(target) == floor(source)
            sideways = level and group(source) != group(target) and floor(source) > 0
            if up or (sideways and (group(source), group(target)) not in SIDEWAYS):
                wrong.append(f"{source} -> {target}")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(sorted(wrong))


def test_viewers_never_import_the_trainer(graph):
    wrong = sorted(f"{s} -> {t}" for s, ts in graph.items() if within(s, VIEWERS)
                   for t in ts if within(t, ("labkit.train", "labkit.experiments")) and (s, t) not in TRAINS)
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    mods = sources()
    edges = {name: imports(path, set(mods), top_level_only=True) for name, path in mods.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*stack, node]):
                return True
        state[node] = 2
        return False

    for node in sorted(edges):
        if state.get(node) is None and visit(node, []):
            break
    assert not cycle, " -> ".join(cycle)


def string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_run_file_names_are_known_to_labkit_runs_alone():
    found = []
    for name, path in sources().items():
        if within(name, ("labkit.runs",)):
            continue
        for line, text in string_constants(ast.parse(path.read_text(encoding="utf-8"))):
            found += [f"{path.relative_to(ROOT)}:{line}: {f}" for f in RUN_FILES if f in text]
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        found += [f"{notebook.name}: {f}" for f in RUN_FILES if f in code]
    assert not found, "run file names spelled out outside labkit.runs:\n" + "\n".join(found)


def test_modules_stay_readable():
    long = {str(p.relative_to(ROOT)): n for p in sources().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_checks_see_a_wrong_import(tmp_path):
    """The reader above finds an upward import when there is one (so a pass means something)."""
    page = tmp_path / "page.py"
    page.write_text("def f():\n    from labkit.train.trainer import Trainer\n", encoding="utf-8")
    assert imports(page, {"labkit.train.trainer"}) == {"labkit.train.trainer"}
    assert imports(page, {"labkit.train.trainer"}, top_level_only=True) == set()
    assert floor("labkit.inspect.attention") == 3 and floor("labkit.runs.layout") == 2


COMMANDS = ("pretrain", "finetune", "eval", "generate", "predict", "runs", "app", "demo", "bench", "export", "import",
            "grade")


def test_the_command_line_help_never_imports_torch():
    """`labkit --help` and every command's --help answer without loading torch (seconds on a busy
    machine): in a fresh interpreter, torch is not in sys.modules after them."""
    import subprocess
    import sys

    probe = """
import sys
from labkit.cli import main
for args in [["--help"]] + [[c, "--help"] for c in sys.argv[1:]]:
    sys.argv = ["labkit", *args]
    try:
        main()
    except SystemExit as e:
        assert e.code in (0, None), (args, e.code)
print("torch loaded" if "torch" in sys.modules else "torch not loaded", file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", probe, *COMMANDS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == "torch not loaded"
    for command in COMMANDS:
        assert f"labkit {command}" in done.stdout  # each command's own usage line was printed


def test_one_figure_per_analysis_for_the_app_and_the_notebooks():
    """The analyses' figures (the lens, surgery, long inputs, the timeline) are labkit.inspect's:
    the app calls each of them, the notebooks call the same functions, and neither keeps a figure
    of its own for them (the app's one own figure is a layer x head grid at one moment)."""
    plots = ROOT / "labkit" / "inspect" / "inside_plots.py"
    figures = [n.name for n in ast.parse(plots.read_text()).body
               if isinstance(n, ast.FunctionDef) and n.name.endswith("_figure")]
    assert {"lens_figure", "token_effect_figure", "long_attention_figure", "timeline_figure"} <= set(figures)
    app_source = "\n".join(p.read_text() for p in (ROOT / "app").rglob("*.py"))
    for name in figures:
        assert f".{name}(" in app_source, f"the app does not draw {name}"
    own = sorted(n.name for p in (ROOT / "app").rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
                 if isinstance(n, ast.FunctionDef) and n.name.endswith("_figure"))
    assert own == ["grid_figure"], own
    notebooks = {p.name: "\n".join("".join(c["source"]) for c in json.loads(p.read_text())["cells"]
                                   if c["cell_type"] == "code")
                 for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    drawn = {name for source in notebooks.values() for name in figures if f"{name}(" in source}
    assert {"lens_figure", "token_effect_figure", "timeline_figure"} <= drawn
    for name, source in notebooks.items():
        assert not re.search(r"^def \w+_figure\(", source, re.M), f"{name} draws a figure of its own"
