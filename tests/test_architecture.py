"""The architecture holds: the layers (import-linter contracts), no module-level import
cycles, small files, and docs/architecture.md shows the fused loop as it is generated."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "genstage_nb"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_level_imports(path: Path) -> set[str]:
    """The genstage_nb modules ``path`` imports when it is imported: top-level imports
    (and those in top-level if/try blocks), not those inside functions or classes, nor
    those under ``if TYPE_CHECKING``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("genstage_nb"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("genstage_nb"):
                    continue
                found.add(target)
                for alias in node.names:  # `from . import pump` imports a module
                    candidate = f"{target}.{alias.name}"
                    if modules_by_name().get(candidate):
                        found.add(candidate)

    visit(ast.parse(path.read_text()).body)
    return found


_MODULES: dict[str, Path] = {}


def modules_by_name() -> dict[str, Path]:
    if not _MODULES:
        for path in PACKAGE.rglob("*.py"):
            _MODULES[module_name(path)] = path
    return _MODULES


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for name, path in modules_by_name().items():
        graph.add_node(name)
        for target in module_level_imports(path):
            # Importing a.b.c imports a and a.b too: count the module itself.
            if target in modules_by_name() and target != name:
                graph.add_edge(name, target)
    return graph


def test_no_two_modules_import_each_other_at_module_level():
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], cycles


def test_the_import_graph_sees_the_runtime_imports():
    # The check above would be empty if the parser found nothing: it finds these.
    graph = import_graph()
    assert graph.has_edge("genstage_nb.core.process", "genstage_nb.core.mailbox")
    assert graph.has_edge("genstage_nb.core.producing", "genstage_nb.core.pump")
    assert graph.has_edge("genstage_nb.pipeline.pipeline", "genstage_nb.pipeline.graph")
    assert graph.has_edge("genstage_nb.notebook.magics", "genstage_nb.pipeline")


def test_the_pipeline_imports_no_notebook_module_at_module_level():
    graph = import_graph()
    pipeline = [n for n in graph if n.startswith("genstage_nb.pipeline")]
    reached = set().union(*(nx.descendants(graph, n) for n in pipeline))
    assert not {n for n in reached if n.startswith("genstage_nb.notebook")}


def test_the_import_contracts_hold():
    import importlinter  # noqa: F401  (the [test] extra has it: never skipped)

    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in result.stdout


#: Functions allowed past 60 lines: the fused loop's template writes the loop out per
#: level (its source is the generated code's shape, shown in docs/architecture.md).
LONG_FUNCTIONS = {("genstage_nb.core.pump", "_round"), ("genstage_nb.core.pump", "level")}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: module_name(p))
def test_files_classes_and_functions_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 650, f"{path.name}: split it by concept"
    for node in ast.walk(ast.parse(text)):
        size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
        if isinstance(node, ast.ClassDef):
            assert size <= 300, f"class {node.name} has {size} lines: split it by role"
        is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if is_function and (module_name(path), node.name) not in LONG_FUNCTIONS:
            assert size <= 60, f"{node.name} has {size} lines: split it where it holds two ideas"


def _generated_block(page_name: str, marker: str, generated: str) -> None:
    """The block between ``<!-- marker -->`` and ``<!-- /marker -->`` of a docs page is
    ``generated`` (GENSTAGE_NB_WRITE_DOCS=1 writes it anew)."""
    page = ROOT / "docs" / page_name
    text = page.read_text()
    block = f"<!-- {marker} -->\n{generated}<!-- /{marker} -->"
    pattern = re.compile(f"<!-- {marker} -->.*?<!-- /{marker} -->", re.S)
    assert pattern.search(text), f"docs/{page_name} lost its {marker} markers"
    if os.environ.get("GENSTAGE_NB_WRITE_DOCS") == "1":
        page.write_text(pattern.sub(lambda _: block, text))
        text = page.read_text()
    assert block in text, (
        f"docs/{page_name}: {marker} changed: GENSTAGE_NB_WRITE_DOCS=1 pytest "
        f"tests/test_architecture.py"
    )


def test_the_architecture_page_shows_the_fused_loop_as_generated():
    from genstage_nb.core.pump import loop_source

    _generated_block("architecture.md", "fused-loop-2", "```python\n" + loop_source(2) + "```\n")


def test_the_concepts_page_lists_the_options_of_the_option_table():
    from genstage_nb.core.options import option_table

    _generated_block("concepts.md", "option-table", option_table())


def test_core_reaches_its_pipeline_through_the_supervisor_protocol_only():
    import genstage_nb as gs
    from genstage_nb.core.supervisor import Supervisor

    assert isinstance(gs.Pipeline(), Supervisor)
    members = {
        name
        for name in dir(Supervisor)
        if not name.startswith("__") and not name.startswith("_abc") and name != "_is_protocol"
    } | set(Supervisor.__annotations__)
    used = set()
    for path in (PACKAGE / "core").glob("*.py"):
        used |= set(re.findall(r"supervisor\.(\w+)", path.read_text()))
    assert used <= members, f"core calls the pipeline outside the protocol: {used - members}"


# What a role may write of another's state: the hook at work (every role that calls a
# hook says which, with its events and a retried call's attempts), and the status a
# pausing stage shows. Everything else a role changes of another's goes through a
# named method of its owner (core/roles.py).
CROSS_ROLE_WRITES = {"current", "current_hook", "_attempts"}
CROSS_ROLE_WRITES_OF = {"Pausing": {"status"}}


def _roles():
    from genstage_nb.core.process import Process, declared_state

    owner: dict[str, str] = {}
    for role in (Process, *Process.ROLES):
        for name in declared_state(role):
            assert name not in owner, f"{name} declared by {owner[name]} and {role.__name__}"
            owner[name] = role.__name__
    return Process, owner


def test_every_role_writes_only_its_own_state():
    Process, owner = _roles()
    for role in Process.ROLES:
        tree = ast.parse(Path(inspect.getfile(role)).read_text())
        (cls,) = [
            n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == role.__name__
        ]
        allowed = CROSS_ROLE_WRITES | CROSS_ROLE_WRITES_OF.get(role.__name__, set())
        for node in ast.walk(cls):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                name = node.attr
                assert name in owner, f"{role.__name__} sets {name}, which no role declares"
                assert owner[name] == role.__name__ or name in allowed, (
                    f"{role.__name__} writes {owner[name]}'s {name}: ask {owner[name]} by a "
                    "named method (core/roles.py)"
                )


def test_a_process_holds_only_declared_state_and_lists_it_by_role():
    """Of stages of every kind and shape, after a run: every attribute of the process is
    declared by exactly one role, and ``state()`` lists them all."""
    import genstage_nb as gs

    Process, owner = _roles()

    class Slow(gs.ConcurrentConsumer):
        async def handle_event(self, event):
            return None

    p = gs.Pipeline()
    src = p.add(gs.from_iterable(range(20)), name="src")
    paced = p.add(gs.producer_consumer(list, rate_limit=(100, 1.0), buffer_size=5), name="paced")

    async def same(x):
        return x

    mapped = p.add(gs.map(same, concurrency=2), name="mapped")
    p.link(src, paced)
    p.link(paced, mapped)
    p.link(mapped, p.add(Slow(), name="each"))
    p.link(src, p.add(gs.consumer(len), name="sink"))
    p.run_sync()
    for stage in p.stages.values():
        proc = stage._process
        assert set(vars(proc)) <= set(owner), set(vars(proc)) - set(owner)
        listed = proc.state()
        assert set(listed) == {"Process", *(role.__name__ for role in Process.ROLES)}
        assert {name for names in listed.values() for name in names} == set(vars(proc))
