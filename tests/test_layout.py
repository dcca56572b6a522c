"""The package's shape, read from the source with `ast`: layers import only downward, no
cycles, kd_core never imports streamlit, pages never import torch and reach kd_core only
through its views and job API, and no kd_core import hides inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "kd_core"

# Lower rank = lower layer. A module may import from its own rank or below, never above.
RANKS = {
    "kd_core.config": 0,
    "kd_core.events": 0,
    "kd_core.errors": 0,
    "kd_core.fmt": 0,
    "kd_core.stats": 0,
    "kd_core.records": 0,
    "kd_core.store": 1,
    "kd_core.methods": 2,
    "kd_core.train": 3,
    "kd_core.jobs": 4,
    "kd_core.deploy": 4,
    "kd_core.pipelines": 4,
    "kd_core.sweep": 5,
    "kd_core.compress": 5,
    "kd_core.views": 6,
    "kd_core.cli": 7,
    "kd_core.__main__": 7,
}
# Third-party packages that are optional or heavy and only needed by one code path may load late.
LATE_IMPORTS_ALLOWED = {"ray", "onnx", "onnxruntime", "scipy", "sklearn", "torchvision", "plotly", "PIL", "optuna"}
PAGE_API = ("kd_core.views", "kd_core.jobs", "kd_core.errors", "kd_core.fmt")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import statement of the file."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path}: relative import; kd_core uses absolute imports"
                base = child.module or ""
                found.extend(
                    (f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base, in_function) for a in child.names
                )
            visit(child, nested)

    visit(tree, False)
    return found + [(m, False) for m in lazy_imports(tree)]


def lazy_imports(tree: ast.Module) -> list[str]:
    """The modules a file imports by name at run time: the values of a module-level COMMANDS table
    of {command: (module, help)} (kd_core/cli/__init__.py imports only the chosen command's group).
    Checked like import statements, so layers and cycles still see them."""
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "COMMANDS" for t in targets):
            return sorted({module for module, _help in ast.literal_eval(value).values()})
    return []


def calls_import_module(path: Path) -> bool:
    tree = ast.parse(path.read_text(), str(path))
    return any(
        isinstance(n, ast.Call)
        and getattr(n.func, "attr", getattr(n.func, "id", None)) in ("import_module", "__import__")
        for n in ast.walk(tree)
    )


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (REPO / rel).with_suffix(".py").is_file() or (REPO / rel / "__init__.py").is_file()


def rank(module: str) -> int:
    for prefix, r in sorted(RANKS.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return r
    raise AssertionError(f"{module} belongs to no layer: add its package to RANKS")


SOURCES = sorted(PACKAGE.rglob("*.py"))


def graph() -> dict[str, set[str]]:
    return {module_name(p): {m for m, _ in imports(p) if m.startswith("kd_core")} for p in SOURCES}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_kd_core_imports_only_downward_and_never_streamlit(path):
    me = module_name(path)
    for target, in_function in imports(path):
        top = target.split(".")[0]
        assert top != "streamlit", f"{me} imports streamlit"
        if top == "kd_core":
            assert not in_function, f"{me} imports {target} inside a function"
            assert rank(target) <= rank(me), f"{me} (layer {rank(me)}) imports {target} (layer {rank(target)})"
        elif in_function:
            assert top in LATE_IMPORTS_ALLOWED, f"{me} imports {target} inside a function"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_an_import_by_name_is_declared_where_the_layering_check_reads_it(path):
    """importlib.import_module hides what a module imports from the checks above, unless the
    file lists its targets in a COMMANDS table (lazy_imports)."""
    if calls_import_module(path):
        assert lazy_imports(ast.parse(path.read_text())), f"{path.name} imports by name without a COMMANDS table"


def test_the_cli_command_table_is_read_as_imports():
    """The check can fail: the CLI's groups, imported by name, count as kd_core.cli's imports."""
    found = {m for m, _ in imports(PACKAGE / "cli" / "__init__.py")}
    assert {"kd_core.cli.train", "kd_core.cli.compress", "kd_core.cli.ui"} <= found
    assert "kd_core.cli.train" in graph()["kd_core.cli"]


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            nxt = nxt if nxt in edges else nxt.rpartition(".")[0]
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt in edges and not state.get(nxt):
                walk(nxt, [*path, nxt])
        state[node] = 2

    for module in edges:
        if not state.get(module):
            walk(module, [module])


@pytest.mark.parametrize("path", sorted((REPO / "app_pages").glob("*.py")), ids=lambda p: p.name)
def test_pages_reach_kd_core_only_through_views_and_jobs(path):
    for target, _ in imports(path):
        assert target.split(".")[0] != "torch", f"{path.name} imports torch"
        if target.startswith("kd_core"):
            assert target.startswith(PAGE_API), f"{path.name} imports {target}; pages use {PAGE_API}"


def test_pages_live_in_app_pages_not_in_a_legacy_pages_folder():
    """A `pages/` folder beside app.py switches Streamlit to its legacy multipage mode: each page
    file run on its own, without app.py's shared sidebar (AppTest always; a browser until the
    first st.navigation call)."""
    assert not (REPO / "pages").exists()
    assert len(list((REPO / "app_pages").glob("*.py"))) >= 7


def test_the_layering_check_catches_an_upward_import(tmp_path):
    """The check itself can fail: a store module importing the engine is refused."""
    assert rank("kd_core.store.db") < rank("kd_core.train.engine")
    assert rank("kd_core.views.studio") > rank("kd_core.sweep.grid")
    with pytest.raises(AssertionError, match="belongs to no layer"):
        rank("kd_core.nowhere")
