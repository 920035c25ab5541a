"""Package layering: the module import graph of scorer/, rules/ and reference_models/ has no cycles, and
imports go one way only (rules -> nothing of ours; scorer -> rules; reference_models -> scorer, rules).

Every import counts, module-level or inside a function; imports under ``if TYPE_CHECKING:`` do not (they
never run). An import of a package's submodule is an edge to that submodule, not to the package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scorer", "rules", "reference_models")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, skipping the bodies of ``if TYPE_CHECKING:`` (their ``else`` runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ours that ``node`` (in ``module``) imports: the most specific known name each time."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            cand = ".".join(parts[:i])
            if cand in known:
                out.add(cand)
                break
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> modules of ours it imports (self-imports dropped)."""
    mods = _modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in _imports(tree):
            edges |= _targets(node, name, path.name == "__init__.py", known)
        graph[name] = edges - {name}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(sorted(comp))
    return out


def _under(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def _edges(graph: dict[str, set[str]], src: str, dst_prefixes: tuple[str, ...]) -> list[str]:
    """``a -> b`` for every edge from a module under ``src`` to one under any of ``dst_prefixes``."""
    return [f"{a} -> {b}" for a in sorted(graph) if _under(a, src) for b in sorted(graph[a])
            if any(_under(b, p) for p in dst_prefixes)]


def _paths(graph: dict[str, set[str]], src: str, dst: str) -> list[str]:
    """For each module under ``src`` that reaches a module under ``dst``, one shortest import chain."""
    out = []
    for start in sorted(m for m in graph if _under(m, src)):
        parent = {start: start}
        frontier = [start]
        while frontier:
            hit = next((m for m in frontier if _under(m, dst)), None)
            if hit is not None:
                chain = [hit]
                while chain[-1] != start:
                    chain.append(parent[chain[-1]])
                out.append(" -> ".join(reversed(chain)))
                break
            nxt = []
            for m in frontier:
                for n in sorted(graph[m]):
                    if n not in parent:
                        parent[n] = m
                        nxt.append(n)
            frontier = nxt
    return out


GRAPH = import_graph()


def test_the_graph_sees_function_level_imports_and_skips_type_checking() -> None:
    # scorer.cli imports scorer.api inside a function; scorer/__init__ names scorer.api under TYPE_CHECKING
    # too, but its lazy __getattr__ import is real
    assert "scorer.api" in GRAPH["scorer.cli"]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import scorer.api\nelse:\n"
                     "    import scorer.cli\ndef f():\n    from . import report\n")
    found = set()
    for node in _imports(tree):
        found |= _targets(node, "scorer.x", False, set(_modules()))
    assert found == {"scorer.cli", "scorer.report"}


def test_no_import_cycles() -> None:
    cycles = [c for c in strongly_connected(GRAPH) if len(c) > 1]
    detail = ["{" + ", ".join(c) + "}: " + "; ".join(f"{a} -> {b}" for a in c for b in sorted(GRAPH[a]) if b in c)
              for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def test_scorer_does_not_import_training() -> None:
    bad = _edges(GRAPH, "scorer", ("reference_models.training",))
    assert not bad, "scorer imports the training package:\n" + "\n".join(bad)
    chains = _paths(GRAPH, "scorer", "reference_models.training")
    assert not chains, "scorer reaches the training package through:\n" + "\n".join(chains)


def test_rules_import_neither_scorer_nor_reference_models() -> None:
    bad = _edges(GRAPH, "rules", ("scorer", "reference_models"))
    assert not bad, "rules imports scorer or reference_models:\n" + "\n".join(bad)
