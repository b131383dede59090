"""The project's own import graph: cycles, and imports that point the wrong way.

    python scripts/import_graph.py            # prints cycles and violations; exit 1 if any
    python scripts/import_graph.py --edges    # also every module and what it imports

Reads the sources with ``ast`` (nothing is imported), counting imports inside functions
too (a lazy import is still a dependency). Modules: ``src/rls/**`` (``rls.*``),
``callbacks/*`` and the entry points beside them. An import of a package's submodule
(``from rls.reports import sweep``) counts as an import of that submodule. Rules checked
beyond cycles: the library (``rls.*``) imports neither ``callbacks`` nor the entry points,
and ``rls.reports`` imports no Lightning.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = ("evaluate", "train_flow", "train_generator")
# (importing module prefix, imported module prefix, why it must not)
FORBIDDEN = [
    ("rls", "callbacks", "the library knows nothing of the callbacks"),
    *[("rls", e, "the library knows nothing of the entry points") for e in ENTRY_POINTS],
    ("rls.reports", "pytorch_lightning", "reports are usable without Lightning"),
    ("rls.reports", "lightning", "reports are usable without Lightning"),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "src").rglob("*.py")):
        parts = path.relative_to(ROOT / "src").with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((ROOT / "callbacks").glob("*.py")):
        name = "callbacks" if path.stem == "__init__" else f"callbacks.{path.stem}"
        found[name] = path
    for name in ENTRY_POINTS:
        if (ROOT / f"{name}.py").exists():
            found[name] = ROOT / f"{name}.py"
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module ``name`` imports (third-party ones by their full dotted name)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a self-import."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def main(argv: list[str]) -> int:
    known = modules()
    raw = {name: imports(name, path, known) for name, path in known.items()}
    # within the project: edges to its own modules only, self-imports aside
    graph = {n: {t for t in targets if t in known and t != n} for n, targets in raw.items()}
    problems = []
    for component in cycles(graph):
        problems.append("import cycle: " + " <-> ".join(component))
    for name, targets in raw.items():
        for src, dst, why in FORBIDDEN:
            if name == src or name.startswith(src + "."):
                for t in sorted(targets):
                    if t == dst or t.startswith(dst + "."):
                        problems.append(f"{name} imports {t}: {why}")
    if "--edges" in argv:
        for name in sorted(graph):
            print(f"{name}: {', '.join(sorted(graph[name])) or '-'}")
    for line in problems:
        print(line)
    print(f"{len(known)} modules, {sum(map(len, graph.values()))} imports between them, "
          f"{len(problems)} problem(s)")  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
