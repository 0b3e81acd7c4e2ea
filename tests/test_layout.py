"""The house rules the layout promises (README "Layout", CONTRIBUTING.md).

Layers, lowest first: the kernel (the top-level modules of pipeline/: the stage contract, config and
CLI bases, progress, the Ray runtime, devices) and manifests/; stages/ (stages/media/ shared by the
stage folders); filters/; the apps, `curate` (pipeline/curate/) and `sama` (sama/). A module imports
only its own layer or lower ones, the stage folders import each other without a cycle, the two apps
never import each other, and only the app's registry names product modules by string. Imports
inside functions count: a late import is still an import. Also: no module over 400 lines, and every
stage registered with its tables and config section."""
from __future__ import annotations

import ast
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages", "filters", "manifests", "sama")
APPS = {"pipeline.curate": "curate", "sama": "sama"}
# Names an import string (``"pkg.module:Attr"`` or ``import_module("pkg.module")``) may use only
# inside its own package: a stage's adapters, the demo's builders.
STRING_IMPORTS_ALLOWED_IN = ("pipeline.curate.registry",)


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
                # `import stages` (a bare top-level package): the Ray runtime ships the source folders
                # to a cluster by their package objects; no module of theirs is imported by it.
                targets = [a.name for a in node.names if a.name not in PACKAGES]
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


def layer(module: str) -> str:
    """kernel, manifests, stage:<folder>, filters, app:curate or app:sama."""
    parts = module.split(".")
    for prefix, app in APPS.items():
        if module == prefix or module.startswith(prefix + "."):
            return f"app:{app}"
    if parts[0] == "pipeline":
        return "kernel"
    if parts[0] == "stages":
        return f"stage:{parts[1]}" if len(parts) > 2 or (REPO / "stages" / parts[-1]).is_dir() else "stage:"
    return parts[0]


RANK = {"kernel": 0, "manifests": 0, "stage": 1, "filters": 2, "app": 3}


def _rank(layer_name: str) -> int:
    return RANK[layer_name.split(":")[0]]


def _edges() -> list[tuple[str, str, str, str]]:
    """(module, its layer, imported module, that layer) for every import across layers."""
    return [(m, layer(m), d, layer(d)) for m, deps in _graph(_modules()).items() for d in sorted(deps)
            if layer(m) != layer(d)]


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


def test_the_kernel_and_manifests_import_no_stage_filter_or_app():
    offenders = [f"{m} -> {d}" for m, lm, d, ld in _edges() if _rank(lm) == 0 and _rank(ld) > 0]
    assert offenders == [], "the kernel (pipeline/*.py) and manifests/ stand below every stage"


def test_nothing_imports_upward():
    """A stage imports no filter and no app; a filter no app (the stages' shared helpers live in
    stages/media/, the kernel or manifests/)."""
    offenders = sorted({f"{m} -> {d}" for m, lm, d, ld in _edges() if _rank(ld) > _rank(lm)})
    assert offenders == []


def test_the_apps_do_not_import_each_other():
    offenders = [f"{m} -> {d}" for m, lm, d, ld in _edges() if lm.startswith("app:") and ld.startswith("app:")]
    assert offenders == [], "what both apps need belongs in the kernel (e.g. pipeline/cli_base.py)"


def test_no_folder_cycle_inside_stages():
    folders: dict[str, set[str]] = {}
    for m, lm, d, ld in _edges():
        if lm.startswith("stage:") and ld.startswith("stage:"):
            folders.setdefault(lm, set()).add(ld)
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(folders.get(n, ())):
            assert state.get(m) != 1, "stage folder cycle: " + " -> ".join(path[path.index(m):] + [m])
            if m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(folders):
        if n not in state:
            visit(n, [n])


def _string_imports(path: Path) -> list[str]:
    """Product modules a file names in a string: ``"pkg.mod:Attr"`` or ``import_module("pkg.mod")``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if ":" in text and " " not in text and text.split(":")[0].split(".")[0] in PACKAGES \
                    and "." in text.split(":")[0]:
                found.append(text)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            arg = node.args[0] if node.args else None
            text = arg.value if isinstance(arg, ast.Constant) else ast.unparse(arg) if arg is not None else ""
            if text.strip("f'\"").split(".")[0] in PACKAGES:
                found.append(text)
    return found


def test_no_import_strings_outside_the_registry():
    """A module named by string escapes every rule above; a package may name its own modules that
    way (ingest's adapters, the demo's builders load on use), the app's registry any."""
    offenders = []
    for name, path in _modules().items():
        if name.startswith(STRING_IMPORTS_ALLOWED_IN):
            continue
        package = name.rpartition(".")[0]
        for text in _string_imports(path):
            target = text.strip("f'\"").split(":")[0]
            if not target.startswith(package + ".") and not target.startswith(package + "{"):
                offenders.append(f"{name}: {text}")
    assert offenders == []


def test_every_stage_is_registered_with_its_tables_and_section():
    from manifests.tables import TABLES
    from pipeline.curate.config import Config
    from pipeline.curate.registry import STAGE_ORDER, STAGES

    core = ["ingest", "probe", "vlm-filter", "filter", "encode", "shard"]  # in this order, others between
    assert [s for s in STAGE_ORDER if s in core] == core
    for stage in STAGES.values():
        assert stage.section in Config.model_fields, f"{stage.name}: no config section {stage.section}"
        for table in (*stage.reads, *stage.writes):
            assert table in TABLES, f"{stage.name}: table {table} is not registered"
        for table in stage.writes:
            assert TABLES[table].stage == stage.name


# The pretext operators run inside the encode stage (its decode and encoder phases), from their own
# section; the pretext folder has no stage of its own.
PART_OF_STAGE = {"encode": ("pretext",), "pretext": ("pretext",)}


def _sections_read(path: Path, sections) -> set[str]:
    """The config sections a module reads as ``cfg.<section>`` (also ``ctx.cfg.``, ``self.cfg.``)."""
    read = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in sections:
            v = node.value
            if (isinstance(v, ast.Name) and v.id == "cfg") or (isinstance(v, ast.Attribute) and v.attr == "cfg"):
                read.add(node.attr)
    return read


def test_a_stage_reads_only_its_own_section_and_the_shared_ones():
    """A setting two stages need lives in a shared section, so a stage's section can change
    without changing what another stage does."""
    import sys

    from pipeline.curate.config import SHARED_SECTIONS, Config
    from pipeline.curate.registry import STAGES

    own: dict[str, set[str]] = {k: set(v) for k, v in PART_OF_STAGE.items()}
    for mod in list(sys.modules.values()):
        stage = getattr(mod, "STAGE", None)
        if stage in STAGES.values() and mod.__name__.startswith(("stages.", "filters.")):
            parts = mod.__name__.split(".")
            own.setdefault(parts[1] if parts[0] == "stages" else parts[0], set()).add(stage.section)
    assert {"probe", "screen", "judge", "encode", "filters"} <= set(own)
    sections = set(Config.model_fields)
    offenders = []
    for path in [*(REPO / "stages").rglob("*.py"), *(REPO / "filters").rglob("*.py")]:
        rel = path.relative_to(REPO).parts
        folder = rel[1] if rel[0] == "stages" and len(rel) > 2 else rel[0]
        foreign = _sections_read(path, sections) - own.get(folder, set()) - set(SHARED_SECTIONS)
        offenders += [f"{path.relative_to(REPO)}: cfg.{s}" for s in sorted(foreign)]
    assert offenders == []


def test_the_registry_exposes_each_stage_s_own_table_declarations():
    """A table is declared once, by the stage that writes it; the registry holds those very
    declarations, in pipeline order."""
    from manifests.tables import TABLES
    from pipeline.curate.registry import STAGES

    declared = [t for stage in STAGES.values() for t in stage.tables]
    for stage in STAGES.values():
        assert tuple(t.name for t in stage.tables) == stage.writes, stage.name
        assert all(t.stage == stage.name for t in stage.tables), stage.name
    assert list(TABLES) == [t.name for t in declared]
    assert all(TABLES[t.name] is t for t in declared)


def test_no_module_over_400_lines():
    big = {str(p.relative_to(REPO)): n for p in _modules().values() if (n := len(p.read_text().splitlines())) > 400}
    assert big == {}


def test_tests_mirror_the_packages():
    """tests/<package path>/test_*.py; at the top only the tests about the whole repo."""
    top = sorted(p.name for p in (REPO / "tests").glob("test_*.py"))
    assert all(n.startswith(("test_layout", "test_bench")) for n in top), top
