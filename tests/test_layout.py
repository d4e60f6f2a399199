"""The shape of the code: one direction of imports, small modules, and one copy of the keys
that decide which runs the report may pool."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nsae.config import CONF_DIR, group_options
from nsae.preflight import resolved_task_config
from nsae.report.groups import sections
from nsae.report.runs import Run, flatten

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nsae", "hydra_plugins")
MAX_LINES = 300


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of `known` that `name` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_walker_sees_a_cycle_and_a_function_level_import(tmp_path: Path) -> None:
    """The walker itself: a cycle closed only by an import inside a function is found."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    known = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    graph = {n: imports_of(n, p, known) for n, p in known.items()}
    assert graph == {"a": {"b"}, "b": {"a"}}
    assert cycles(graph) == [["a", "b"]]


def test_nsae_imports_flow_one_way() -> None:
    graph = import_graph()
    assert "nsae.job" in graph and "nsae.rundir" in graph["nsae.job"]  # the walk sees imports
    assert cycles(graph) == []
    data_to_metrics = sorted(
        (m, d)
        for m, deps in graph.items()
        if m.startswith("nsae.data")
        for d in deps
        if d.startswith("nsae.metrics")
    )
    assert data_to_metrics == []


def test_no_module_is_over_300_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def sae_keys(sae_type: str) -> dict[str, object]:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"sae_type={sae_type}"])
    return flatten(resolved_task_config(cfg))


def other(value: object) -> object:
    """A value different from `value`, of a like kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if value is None:
        return 0.5
    return f"{value}_other"


@pytest.mark.parametrize("sae_type", group_options("sae_type"))
def test_runs_that_differ_in_any_sae_key_never_share_a_cell(sae_type: str) -> None:
    """Two finished runs (seeds 0 and 1) that differ in one sae.* key: the report may show
    them side by side, never pool them as seeds of one cell."""
    flat_cfg = sae_keys(sae_type)
    keys = [k for k in flat_cfg if k.startswith("sae.") and k != "sae.type"]
    assert keys  # every type has its common keys at least
    summary = {"condition": {"alpha": flat_cfg.get("coeff.alpha")}, "metrics": {}, "layers": [0]}

    def pooled(change: dict[str, object]) -> list[object]:
        a = Run(Path("a"), "a", dict(flat_cfg), status="done", summary=summary)
        b = Run(Path("b"), "b", {**flat_cfg, **change, "seed": 1}, status="done", summary=summary)
        return [
            cell
            for section in sections([a, b])
            for cells in section.cells.values()
            for cell in cells
            if len(cell.runs) > 1
        ]

    assert len(pooled({})) == 1  # the control: two seeds of one condition are one cell
    for key in keys:
        assert pooled({key: other(flat_cfg[key])}) == [], f"{sae_type}: {key} pooled"
