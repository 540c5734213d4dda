"""The package's layers import one way only (docs/architecture.md).

The import graph of `reworld/`, `analysis/` and `app/` is read from the source (AST: every `import` and
`from … import`, at module level or inside functions), so a lazy import counts as much as an eager one.
A module may import from its own layer and the layers below it, never from one above; and the graph has
no cycle. The order is written once, here, and docs/architecture.md draws it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("reworld", "analysis", "app")

# Lowest first. A module belongs to the layer of the longest prefix that names it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("reworld.config", "reworld.paths", "reworld.runtime", "reworld.arrays")),
    ("data", ("reworld.data",)),
    ("planning", ("reworld.planning",)),
    ("models", ("reworld.models",)),
    ("schedulers", ("reworld.schedulers",)),
    ("losses and sampling", ("reworld.losses", "reworld.sampling")),
    ("pipelines", ("reworld.pipelines",)),
    ("evaluation and figures", ("reworld.evaluation", "reworld.viz")),
    ("training", ("reworld.training",)),
    ("entry points", ("reworld.cli", "reworld.ship", "reworld.__main__", "reworld")),
    ("analysis", ("analysis",)),
    ("app", ("app",)),
)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    if best is None:
        raise KeyError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py and docs/architecture.md")
    return best


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Project modules that `module` imports: `import x.y` names x.y; `from x import a` names x.a when that
    is a module, else x (relative imports resolved against the module's package)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]

    def most_specific(name: str) -> str | None:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in known:
                return ".".join(parts[:n])
        return None

    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {most_specific(a.name) for a in node.names if a.name.split(".")[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if sub in known else most_specific(target))
    return {m for m in found if m is not None and m != module}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    known = set(files)
    return {m: imports_of(p, m, known) for m, p in files.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(module):
                bad.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    graph = import_graph()
    assert len(graph) > 50
    for module in graph:
        layer_of(module)


def test_no_import_climbs_a_layer():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_inference_does_not_import_training():
    graph = import_graph()
    reach, todo = set(), ["reworld.pipelines.world_action"]
    while todo:
        m = todo.pop()
        for dep in graph[m]:
            if dep not in reach:
                reach.add(dep)
                todo.append(dep)
    assert not {m for m in reach if m.startswith(("reworld.training", "reworld.evaluation", "reworld.cli"))}


def _copy_tree(tmp_path: Path) -> Path:
    import shutil

    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize("module_file, line", [
    ("reworld/models/vae.py", "from reworld.training.loop import run\n"),  # a model reaching into training
    ("reworld/pipelines/world_action.py", "    from reworld.cli import main\n"),  # lazy, inside a function
    ("reworld/data/types.py", "from ..planning import scene\n"),  # relative
])
def test_the_check_fails_on_an_upward_import(tmp_path, module_file, line):
    root = _copy_tree(tmp_path)
    path = root / module_file
    text = path.read_text()
    if line.startswith("    "):  # inside the first function
        head, sep, rest = text.partition("\ndef ")
        body_start = rest.index(":\n") + 2
        text = head + sep + rest[:body_start] + line + rest[body_start:]
    else:
        text = text + "\n" + line
    path.write_text(text)
    bad = upward_imports(import_graph(root))
    assert len(bad) == 1 and module_file.replace("/", ".").removesuffix(".py") in bad[0]


def test_the_check_finds_a_cycle(tmp_path):
    root = _copy_tree(tmp_path)
    path = root / "reworld" / "schedulers" / "flow_match.py"  # losses.flow imports it already
    path.write_text(path.read_text() + "\nfrom reworld.losses.flow import video_training_losses\n")
    assert ["reworld.losses.flow", "reworld.schedulers.flow_match"] in cycles(import_graph(root))
