"""Stages built from the hooks a notebook cell defines, and their code swapped in place.

A cell defines hooks as plain functions (``def handle_events(events): ...``, or with a
first parameter ``self`` to keep state on the stage) or one stage class. Re-running the
cell swaps the code of the same stage object: its state (attributes), buffer and
subscriptions stay, and the next batch runs the new code (a batch in flight finishes
with the old one, so no event is lost or handled twice).
"""

from __future__ import annotations

import ast
import inspect
import types
from typing import Any

from ..core.options import options_of
from ..core.stage import HOOKS, ConcurrentConsumer, Consumer, Producer, ProducerConsumer, Stage

KINDS = ("producer", "producer_consumer", "consumer")
#: The hook each kind cannot do without.
REQUIRED = {
    "producer": ("handle_demand", "handle_demand(demand) returning the events"),
    "producer_consumer": ("handle_events", "handle_events(events) returning the events"),
    "consumer": ("handle_events", "handle_events(events)"),
}


class CellError(ValueError):
    """Bad input in a ``%%stage`` cell: one line naming the stage and the fix."""


class _CellHooks:
    """Mixin: hooks given as functions, bound to this stage; swappable."""

    _cell_hooks: tuple[str, ...] = ()

    def set_hooks(self, hooks: dict[str, Any]) -> None:
        for name in self._cell_hooks:
            if name not in hooks and name in self.__dict__:
                delattr(self, name)
        for name, fn in hooks.items():
            setattr(self, name, _bind(fn, self))
        self._cell_hooks = tuple(hooks)


class CellProducer(_CellHooks, Producer):
    """A producer whose hooks come from a notebook cell."""


class CellProducerConsumer(_CellHooks, ProducerConsumer):
    """A producer-consumer whose hooks come from a notebook cell."""


class CellConsumer(_CellHooks, Consumer):
    """A consumer whose hooks come from a notebook cell."""


class CellConcurrentConsumer(_CellHooks, ConcurrentConsumer):
    """A concurrent consumer whose ``handle_event`` comes from a notebook cell."""


CELL_CLASSES = {
    "producer": CellProducer,
    "producer_consumer": CellProducerConsumer,
    "consumer": CellConsumer,
}


def _bind(fn: Any, stage: Any) -> Any:
    """Functions whose first parameter is ``self`` become methods of the stage."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return fn
    if params and params[0] == "self":
        return types.MethodType(fn, stage)
    return fn


class CellCodeError(Exception):
    """The cell's own code did not compile, or raised while its top level ran.

    ``error`` is the user's exception; ``filename`` the name the cell was compiled
    under, so that a traceback can start at the cell's own frame."""

    def __init__(self, error: BaseException, filename: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.filename = filename


def defined_names(tree: ast.Module) -> tuple[list[str], list[str], bool]:
    """The functions and classes a cell defines at its top level, and whether its
    ``handle_events`` returns a value (events, for a producer-consumer)."""
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    returns = any(
        isinstance(node, ast.Return) and node.value is not None
        for fn in functions
        if fn.name == "handle_events"
        for node in _own_nodes(fn)
    )
    return [fn.name for fn in functions], classes, returns


def _own_nodes(fn: ast.AST) -> Any:
    """The nodes of a function's body, not those of functions defined inside it."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def cell_contents(
    name: str, cell: str, namespace: dict, filename: str | None = None, first_line: int = 1
) -> tuple[dict[str, Any], type | None, bool]:
    """Run ``cell`` in ``namespace``; return the hooks it defined (or its stage class)
    and whether its ``handle_events`` returns events.

    The cell is compiled as ``filename`` (default ``<stage NAME>``) with its first line
    numbered ``first_line``, so errors point at the notebook cell's own lines. A syntax
    error, or an exception raised by the cell's top level, comes as ``CellCodeError``.
    """
    filename = filename or f"<stage {name}>"
    source = "\n" * (first_line - 1) + cell
    try:
        tree = ast.parse(source, filename, "exec")
    except SyntaxError as exc:
        raise CellCodeError(exc, filename) from None
    functions, classes, returns = defined_names(tree)
    try:
        exec(compile(tree, filename, "exec"), namespace)  # noqa: S102 - the user's cell
    except Exception as exc:
        raise CellCodeError(exc, filename) from None
    stage_classes = [
        namespace[c]
        for c in classes
        if isinstance(namespace.get(c), type) and issubclass(namespace[c], Stage)
    ]
    if len(stage_classes) > 1:
        names = ", ".join(c.__name__ for c in stage_classes)
        raise CellError(
            f"stage {name!r}: the cell defines several stage classes ({names}); keep one"
        )
    hooks = {f: namespace[f] for f in functions if f in HOOKS}
    if stage_classes:
        if hooks:
            raise CellError(
                f"stage {name!r}: define either hook functions or one stage class, not both"
            )
        return {}, stage_classes[0], False
    if not hooks:
        raise CellError(
            f"stage {name!r}: the cell defines no hook; define handle_demand(demand) for a "
            f"producer or handle_events(events) for a consumer"
        )
    return hooks, None, returns


def infer_kind(hooks: dict[str, Any], has_subscribers: bool, current: Stage | None) -> str:
    """``handle_demand`` -> producer; otherwise consumer, or producer-consumer when
    another stage subscribes to it."""
    if "handle_demand" in hooks:
        return "producer"
    if has_subscribers or (current is not None and current.kind == "producer_consumer"):
        return "producer_consumer"
    return "consumer"


def check_hooks(name: str, kind: str, hooks: dict[str, Any]) -> None:
    if kind == "consumer" and "handle_event" in hooks and "handle_events" not in hooks:
        if not inspect.iscoroutinefunction(hooks["handle_event"]):
            raise CellError(
                f"stage {name!r}: handle_event must be 'async def' (it runs concurrently)"
            )
        return
    hook, text = REQUIRED[kind]
    if hook not in hooks:
        raise CellError(f"stage {name!r}: a {kind} cell must define {text}")


def new_stage(
    name: str, kind: str, hooks: dict[str, Any], cls: type | None, options: dict | None = None
) -> Stage:
    """A new stage for the cell, with the stage options its flags give."""
    options = options or {}
    if cls is not None:
        try:
            return cls(**options)
        except (TypeError, ValueError) as exc:
            if str(exc).startswith("stage "):
                raise CellError(str(exc).replace(repr(cls.__name__), repr(name), 1)) from None
            raise CellError(
                f"stage {name!r}: {cls.__name__}(**options) must take the stage options "
                f"(pass them on to super().__init__): {exc}"
            ) from None
    if kind == "consumer" and "handle_event" in hooks and "handle_events" not in hooks:
        make: Any = CellConcurrentConsumer
    else:
        make = CELL_CLASSES[kind]
    try:
        stage = make(name=name, **options)
    except (TypeError, ValueError) as exc:
        raise CellError(str(exc)) from None
    stage._name = None  # (Pipeline.add names it)
    stage.set_hooks(hooks)
    return stage


def options_of_stage(stage: Stage) -> dict[str, Any]:
    """The options ``stage`` was given away from their defaults, to build it again."""
    kind = getattr(stage, "_option_kind", stage.kind)
    kept = {}
    for option in options_of(kind):
        if option.flag is None:
            continue
        value = getattr(stage, option.slot, option.default_for(kind))
        if value != option.default_for(kind):
            kept[option.name] = value
    return kept


def swap_code(stage: Stage, hooks: dict[str, Any], cls: type | None) -> None:
    """Give ``stage`` new code in place: same object, state, buffer, subscriptions."""
    if cls is not None:
        if getattr(stage, "_cell_hooks", None) is not None and isinstance(stage, _CellHooks):
            for hook in stage._cell_hooks:
                stage.__dict__.pop(hook, None)
        stage.__class__ = cls
    else:
        stage.set_hooks(hooks)  # type: ignore[attr-defined]
