"""The house rules the layout promises (README "Layout", CONTRIBUTING.md): no import cycle among
the product packages (imports inside functions included), no stage importing the runner, every
stage declared in the registry with its tables registered, and no module over 400 lines."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages", "filters", "manifests", "sama")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(REPO).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = p
    return mods


def _graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the internal modules it imports anywhere in its body."""
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod.
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods]
                targets = subs or [node.module]
            else:
                continue
            deps |= {r for t in targets if t.split(".")[0] in PACKAGES and (r := resolve(t))
                     and r != name and not name.startswith(r + ".")}  # its own package: not an edge
        graph[name] = deps
    return graph


def test_no_import_cycle():
    graph = _graph(_modules())
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            assert state.get(m) != 1, "import cycle: " + " -> ".join(path[path.index(m):] + [m])
            if m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_no_stage_imports_the_runner():
    graph = _graph(_modules())
    offenders = sorted(n for n, deps in graph.items() if n.startswith(("stages", "filters"))
                       and deps & {"pipeline.runner", "pipeline.registry", "pipeline.cli"})
    assert offenders == []


def test_every_stage_is_registered_with_its_tables_and_section():
    from manifests.tables import TABLES
    from pipeline.registry import STAGE_ORDER, STAGES

    from pipeline.config import Config

    assert STAGE_ORDER == ["ingest", "probe", "screen", "vlm-filter", "filter", "encode", "shard"]
    for stage in STAGES.values():
        assert stage.section in Config.model_fields, f"{stage.name}: no config section {stage.section}"
        for table in (*stage.reads, *stage.writes):
            assert table in TABLES, f"{stage.name}: table {table} is not in manifests/tables.py"
        for table in stage.writes:
            assert TABLES[table].stage == stage.name


def test_no_module_over_400_lines():
    big = {str(p.relative_to(REPO)): n for p in _modules().values() if (n := len(p.read_text().splitlines())) > 400}
    assert big == {}
