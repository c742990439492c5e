"""The layout the README's "Layout" section describes, checked by walking every module's imports:

* no import cycle between modules;
* no library module (anything outside ``cxrprep/cli`` and ``cxrtrain/cli``) imports the CLI edge;
* cxrprep never imports cxrtrain; cxrtrain's library imports from cxrprep only the shard contract
  (schema, shards), the label names and the template engine (text.templates, text.promptfiles);
* no module over 500 lines; pyproject.toml lists every package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cxrprep", "cxrtrain")
CXRTRAIN_MAY_USE = (
    "cxrprep.schema",
    "cxrprep.shards",
    "cxrprep.labels",
    "cxrprep.text.templates",
    "cxrprep.text.promptfiles",
    "cxrprep",
)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _imports(path: Path, module: str, is_pkg: bool) -> set[str]:
    """Every cxrprep/cxrtrain module imported anywhere in the file (function-level imports included)."""
    tree = ast.parse(path.read_text())
    found = set()
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, f in mods.items():
        deps = set()
        for imp in _imports(f, name, f.name == "__init__.py"):
            while imp and imp not in mods:  # `from pkg import name` -> the module pkg
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                deps.add(imp)
        graph[name] = deps
    return graph


def _is_cli(mod: str) -> bool:
    return mod.startswith(("cxrprep.cli", "cxrtrain.cli")) or mod.endswith(".__main__")


def test_no_import_cycle():
    graph = _graph()
    # a package's __init__ importing its own submodules is not a cycle of design
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_library_never_imports_the_cli_edge():
    bad = [(m, d) for m, deps in _graph().items() if not _is_cli(m) for d in deps if _is_cli(d)]
    assert not bad, f"library modules importing the CLI edge: {bad}"


def test_dependencies_run_one_way():
    graph = _graph()
    up = [(m, d) for m, deps in graph.items() if m.startswith("cxrprep") for d in deps if d.startswith("cxrtrain")]
    assert not up, f"cxrprep imports cxrtrain: {up}"
    leaks = [
        (m, d)
        for m, deps in graph.items()
        if m.startswith("cxrtrain") and not _is_cli(m)
        for d in deps
        if d.startswith("cxrprep")
        and not any(d == a or d.startswith(a + ".") for a in CXRTRAIN_MAY_USE[:-1])
        and d != "cxrprep"
    ]
    assert not leaks, f"cxrtrain's library reaches past the shard contract and template engine: {leaks}"


def test_no_module_over_500_lines():
    """The packages, and the tests, benchmarks and examples beside them."""
    files = [*_modules().values(), *(f for d in ("tests", "bench", "examples") for f in (ROOT / d).rglob("*.py"))]
    long = {str(f.relative_to(ROOT)): n for f in files if (n := len(f.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


def test_no_function_over_80_lines_without_a_reason():
    """Issue 19: a function over 80 lines says why in a ``# long: ...`` comment just above it."""
    long = []
    for name, f in _modules().items():
        lines = f.read_text().splitlines()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                above = lines[max(0, first - 3) : first - 1]
                if not any(x.strip().startswith("# long:") for x in above):
                    long.append(f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, f"functions over 80 lines without a '# long:' reason: {long}"


def test_pyproject_lists_every_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(f.parent.relative_to(ROOT).parts) for pkg in PACKAGES for f in (ROOT / pkg).rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
