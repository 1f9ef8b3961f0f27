"""The layers point one way: read from the source's import statements (``ast``), every one of
them, also those inside functions."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"probgen": "probgen", "models": "probgen.models", "inference": "probgen.inference"}

# What inference/ may not import: it takes models as arguments, and what processes, run folders
# and the command line need is passed to it as hooks (ProcessGroup, callbacks, checkpoint).
FORBIDDEN_FROM_INFERENCE = ("probgen.distributed", "probgen.runs", "probgen.cli", "probgen.models")

# Edges still present elsewhere, listed so that they stay visible; each closes a cycle between
# top-level modules that the change named beside it removes.
EXEMPT_EDGES: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in f.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = f
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that ``name`` (a module or a name in one) belongs to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """The modules of ours that ``module`` imports, at module level or inside functions;
    ``from package import submodule`` counts as the submodule."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    out = {_resolve(n) for n in found}
    # a package's own __init__ runs before any of its modules: not an arrow between layers
    return {m for m in out if m and m != module and not module.startswith(m + ".")}


GRAPH = {m: _imports(m, p) - {b for a, b in EXEMPT_EDGES if a == m} for m, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> str:
    """``probgen.X``: a top-level module or subpackage (data, eval, models, inference, runs, ...)."""
    return ".".join(module.split(".")[:2])


def test_the_graph_sees_the_imports_it_should():
    # a known arrow of each kind: module level, inside a function, and from a package
    assert "probgen.inference.em" in GRAPH["probgen.models.gmm"]
    assert "probgen.inference.loop" in GRAPH["probgen.distributed"]
    assert "probgen.data.batching" in GRAPH["probgen.inference.loop"]


def test_inference_imports_no_processes_runs_command_line_or_models():
    bad = sorted((m, i) for m, imports in GRAPH.items() if m.startswith("probgen.inference.")
                 for i in imports if i.startswith(FORBIDDEN_FROM_INFERENCE))
    assert bad == []


def test_no_import_cycle_between_modules():
    assert _cycles(GRAPH) == []


def test_no_import_cycle_between_top_level_modules():
    layers: dict[str, set[str]] = {}
    for m, imports in GRAPH.items():
        layers.setdefault(_layer(m), set()).update(_layer(i) for i in imports if _layer(i) != _layer(m))
    assert _cycles(layers) == []


def test_every_exemption_is_still_needed():
    for a, b in EXEMPT_EDGES:
        assert b in _imports(a, MODULES[a]), f"{a} no longer imports {b}: drop the exemption"


def _private_uses(path: Path, package: str) -> list[str]:
    """``from X import _name`` and ``X._name`` for a module X of ours imported in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    ours = ("probgen", "models", "inference", "_")
    aliases, bad = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            if not base.startswith(ours):
                continue
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {base}.{a.name}")
                elif f"{base}.{a.name}" in MODULES or base in ("probgen", "models", "inference"):
                    aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(ours):
                    aliases.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {ast.unparse(node)}")
    return bad


def test_no_module_uses_a_private_name_of_another():
    files = {p: m.rpartition(".")[0] if p.name != "__init__.py" else m for m, p in MODULES.items()}
    for folder in ("examples", "benchmarks"):
        files.update({p: folder for p in sorted((ROOT / folder).glob("*.py"))})
    bad = [b for p, package in files.items() for b in _private_uses(p, package)]
    assert bad == []
