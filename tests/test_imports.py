"""The package's module-level import graph has no cycle (a circle makes import order matter and hides
which layer depends on which). Imports inside functions and under `if TYPE_CHECKING:` are not edges."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "clmr"


def module_name(path: Path, root: Path = ROOT) -> str:
    """clmr/inference/api.py -> clmr.inference.api; clmr/inference/__init__.py -> clmr.inference."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements run at import time: the body, and the branches of module-level if/try/with blocks,
    except `if TYPE_CHECKING:` (never run)."""
    out = []
    for node in body:
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                out += _module_level(node.body)
            out += _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            out += _module_level(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                out += _module_level(handler.body)
        elif isinstance(node, ast.With):
            out += _module_level(node.body)
        else:
            out.append(node)
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the clmr modules its execution imports (targets and the packages they live in, except
    packages the importer itself lives in, which are already being imported)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    packages = {name for name, p in files.items() if p.name == "__init__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name if name in packages else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _module_level(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets.add(base)
                targets.update(
                    f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in files
                )
        edges = set()
        for target in targets:
            if target not in files:
                continue
            edges.add(target)
            edges.update(a for a in _ancestors(target) if a not in _ancestors(name) and a != name)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_clmr_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40 and "clmr.models.clmr" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module that importing `start` imports, directly or not."""
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_models_do_not_depend_on_inference_or_evaluation():
    graph = import_graph()
    below = reachable(graph, "clmr.models")
    assert "clmr.models.samplecnn" in below
    assert not {
        m for m in below if m.startswith(("clmr.songs", "clmr.inference", "clmr.evaluate", "clmr.hear"))
    }


LOWER = ("models/**/*.py", "augment/**/*.py", "losses.py", "data/**/*.py", "audio*.py")
"""The layers below the song-level path, training, evaluation and the command line (globs under clmr/)."""
UPPER = ("clmr.songs", "clmr.train", "clmr.evaluate", "clmr.cli")


def named_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file names anywhere: import statements at any depth (functions and `if
    TYPE_CHECKING:` blocks included; relative ones resolved; `from a import b` also gives `a.b`) and
    string constants that are whole dotted `clmr.` names (lazy-import tables, `import_module` calls)."""
    name = module_name(path, root)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text.startswith("clmr.") and all(part.isidentifier() for part in text.split(".")):
                found.add(text)
    return found


def upward_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """file (relative to the package's parent) -> the upper-layer modules it names, for the lower layers."""
    out = {}
    for pattern in LOWER:
        for path in sorted(root.glob(pattern)):
            bad = {
                m for m in named_modules(path, root) if any(m == u or m.startswith(u + ".") for u in UPPER)
            }
            if bad:
                out[str(path.relative_to(root.parent))] = bad
    return out


def test_lower_layers_never_import_upper_ones():
    """Models, augmentations, the loss, data and audio know nothing of songs, training, evaluation or the
    CLI, not even for type hints or inside a function: the layers import downwards only."""
    assert len(list(ROOT.glob("models/**/*.py"))) > 5 and (ROOT / "losses.py").exists()
    assert upward_imports() == {}


@pytest.mark.parametrize(
    "text",
    [
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from clmr.songs import apply\n",
        "def f():\n    import clmr.train.engine\n",
        "from ..evaluate import probe\n",
        "from clmr import cli\n",
        "import importlib\nLAZY = {'x': 'clmr.songs.apply'}\n",
    ],
)
def test_the_layer_check_finds_every_kind_of_upward_import(tmp_path, text):
    root = _package(tmp_path, {"clmr.__init__": "", "clmr.models.__init__": "", "clmr.models.net": text})
    (root / "losses.py").write_text("from clmr.models import net\n'clmr.songs is above this module'\n")
    assert list(upward_imports(root)) == ["clmr/models/net.py"]


def _package(tmp_path: Path, modules: dict[str, str]) -> Path:
    root = tmp_path / "clmr"
    for name, text in modules.items():
        path = tmp_path / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_check_finds_a_cycle_through_a_package_init(tmp_path):
    root = _package(
        tmp_path,
        {
            "clmr.__init__": "",
            "clmr.models.__init__": "from clmr.models.net import Net\n",
            "clmr.models.net": "from clmr.inference import embed\n",
            "clmr.inference.__init__": "from clmr.inference.api import embed\n",
            "clmr.inference.api": "import numpy\nfrom clmr.models import Net\n",
        },
    )
    cycle = find_cycle(import_graph(root))
    assert cycle is not None and cycle[0] == cycle[-1]
    assert {"clmr.models", "clmr.inference.api"} <= set(cycle)


@pytest.mark.parametrize(
    "net",
    [
        "def f():\n    from clmr.inference import embed\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from clmr.inference import embed\n",
    ],
)
def test_function_level_and_type_checking_imports_are_not_edges(tmp_path, net):
    root = _package(
        tmp_path,
        {
            "clmr.__init__": "",
            "clmr.models.__init__": "from . import net\n",
            "clmr.models.net": net,
            "clmr.inference.__init__": "from clmr.inference.api import embed\n",
            "clmr.inference.api": "from clmr.models import net\n",
        },
    )
    graph = import_graph(root)
    assert graph["clmr.models"] == {"clmr.models.net"}
    assert graph["clmr.inference.api"] == {"clmr.models", "clmr.models.net"}
    assert find_cycle(graph) is None
