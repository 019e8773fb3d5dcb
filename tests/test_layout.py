"""The package's import graph: no circular imports, and stages import only the stages before them.

The graph is read from the source (every `import` and `from ... import`, at module level or inside
functions; `if TYPE_CHECKING:` blocks are skipped, they never run). An edge goes to the module
named, or to the submodule when `from package import name` names one. Parent packages that Python
initialises on the way are not edges: a package `__init__` re-exporting its submodules would
otherwise make every submodule part of a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

# The data flow, earliest first; stages of one rank stand side by side and import none of each other.
STAGES = [("runtime",), ("models", "crosscoder", "synthetic"), ("data",), ("training",), ("analysis",),
          ("report",), ("pipeline",)]
RANK = {stage: r for r, group in enumerate(STAGES) for stage in group}
FORBIDDEN_TOP = ("launch", "configs", "tests", "benchmarks")


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of `package` under `root`."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Import nodes that run, skipping the bodies of `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules (of `package`, or forbidden top-level ones) that it imports."""
    modules = module_names(root, package)
    tops = (package,) + FORBIDDEN_TOP
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        edges = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            edges.update(t for t in targets if t.split(".")[0] in tops and t != name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (or a module importing itself), as a
    cycle path."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def stage_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a stage into a later one or a sibling, of `launch`/`configs`/tests, and modules
    outside every stage."""
    bad = []
    for src, targets in sorted(graph.items()):
        s = stage_of(src)
        if s is not None and s not in RANK:
            bad.append(f"{src} belongs to no stage (known: {sorted(RANK)})")
            continue
        for dst in sorted(targets):
            if dst.split(".")[0] in FORBIDDEN_TOP:
                bad.append(f"{src} imports {dst}: the library never imports {dst.split('.')[0]}/")
                continue
            d = stage_of(dst)
            if s is None or d is None or d == s:
                continue
            if d not in RANK:
                bad.append(f"{src} imports {dst}, which belongs to no stage")
            elif RANK[d] >= RANK[s]:
                kind = "a sibling stage" if RANK[d] == RANK[s] else "a later stage"
                bad.append(f"{src} ({s}) imports {dst} ({d}), {kind}")
    return bad


def test_the_package_has_no_circular_imports():
    graph = import_graph(ROOT, "crosscoder_jax")
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the graph was really read
    assert cycles(graph) == []


def test_stages_import_only_earlier_stages():
    graph = import_graph(ROOT, "crosscoder_jax")
    assert {stage_of(m) for m in graph} - {None} == set(RANK)
    assert stage_violations(graph) == []


def test_the_checks_catch_cycles_and_backward_imports(tmp_path):
    pkg = tmp_path / "crosscoder_jax"
    files = {
        "__init__.py": "",
        "data/__init__.py": "from crosscoder_jax.data.store import Store\n",
        "data/store.py": "from crosscoder_jax.analysis import relie\nclass Store: ...\n",
        "data/reader.py": "def f():\n    from crosscoder_jax.data import store\n",
        "analysis/__init__.py": "",
        "analysis/relie.py": "from . import labels\n",
        "analysis/labels.py": "from .relie import x\nfrom typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from crosscoder_jax.report import page\n",
        "models/__init__.py": "",
        "models/core.py": "from crosscoder_jax.synthetic import vocab\nimport launch.train\n",
        "synthetic/__init__.py": "",
        "synthetic/vocab.py": "",
        "report/__init__.py": "",
        "report/page.py": "",
        "extra.py": "",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = import_graph(tmp_path, "crosscoder_jax")
    assert graph["crosscoder_jax.data.reader"] == {"crosscoder_jax.data.store"}
    assert graph["crosscoder_jax.analysis.labels"] == {"crosscoder_jax.analysis.relie"}  # TYPE_CHECKING skipped
    assert cycles(graph) == [["crosscoder_jax.analysis.labels", "crosscoder_jax.analysis.relie"]]
    bad = stage_violations(graph)
    assert any("data.store (data) imports crosscoder_jax.analysis.relie (analysis), a later stage" in b for b in bad)
    assert any("models.core (models) imports crosscoder_jax.synthetic.vocab (synthetic), a sibling" in b for b in bad)
    assert any("never imports launch/" in b for b in bad)
    assert any("crosscoder_jax.extra belongs to no stage" in b for b in bad)
    assert len(bad) == 4
