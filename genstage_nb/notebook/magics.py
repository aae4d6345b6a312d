"""``%%stage`` and ``%pipeline``: define, swap and run stages from notebook cells."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from ..core.options import BY_NAME, OPTIONS, flags_of_cell
from ..core.stage import Stage
from ..core.subscription import CANCEL_MODES
from ..flow import Flow
from ..flow.running import started_flow
from ..pipeline import Pipeline, default_pipeline
from ..watchdog import current_warnings
from . import cells
from .cells import CELL_CLASSES, KINDS, CellError, _CellHooks
from .notices import describe

PIPELINE_COMMANDS = (
    "start",
    "stop",
    "status",
    "resume",
    "skip",
    "explain",
    "progress",
    "peek",
    "show",
    "plot",
    "dashboard",
    "reset",
)


#: Where stages keep their options (a rebuilt stage takes its own, not the old one's).
OPTION_SLOTS = frozenset(option.slot for option in OPTIONS)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump, no exit
        raise UsageError(f"{self.prog}: {message}")


def _stage_parser() -> _Parser:
    p = _Parser(prog="%%stage", add_help=False)
    p.add_argument("name")
    p.add_argument("--kind")
    p.add_argument("--subscribe-to", dest="subscribe_to")
    p.add_argument("--max-demand", dest="max_demand")
    p.add_argument("--min-demand", dest="min_demand")
    p.add_argument("--cancel")
    p.add_argument("--pipeline")
    for option in flags_of_cell():  # the stage's options (the option table, options.py)
        p.add_argument(option.flag_name, dest=f"option_{option.name}")
    return p


def _stage_options(name: str, args: argparse.Namespace, namespace: dict) -> dict[str, Any]:
    """The stage options the cell's flags give, parsed (by the option table)."""
    given = {}
    for option in flags_of_cell():
        text = getattr(args, f"option_{option.name}")
        if text is not None:
            try:
                given[option.name] = option.parse(text, namespace)
            except ValueError as exc:
                raise UsageError(f"stage {name!r}: {exc}") from None
    return given


def _check_line(name: str, args: argparse.Namespace) -> None:
    """``--kind`` and ``--cancel`` name known values."""
    if args.kind is not None and args.kind not in KINDS:
        raise UsageError(
            f"stage {name!r}: unknown --kind {args.kind!r} (use producer, "
            f"producer_consumer or consumer)"
        )
    if args.cancel is not None and args.cancel not in CANCEL_MODES:
        raise UsageError(
            f"stage {name!r}: unknown --cancel {args.cancel!r} (use permanent, transient "
            f"or temporary)"
        )


def _producers(p: Pipeline, name: str, text: str | None) -> list[str]:
    """The stages ``--subscribe-to`` names, each known and not the stage itself."""
    producers = [s.strip() for s in (text or "").split(",") if s.strip()]
    for producer in producers:
        if producer == name:
            raise UsageError(f"stage {name!r}: a stage cannot subscribe to itself")
        if producer not in p.graph:
            known = ", ".join(p.graph.nodes) or "none yet"
            raise UsageError(
                f"stage {name!r}: unknown --subscribe-to name {producer!r} (stages: {known})"
            )
    return producers


def _kind_of(
    p: Pipeline, name: str, given: str | None, hooks: dict, cls: type[Stage] | None
) -> str:
    """The stage's kind: its class's, ``--kind``, or what its hooks and links say."""
    if cls is not None:
        kind = cls.kind
        if given is not None and given != kind:
            raise CellError(f"stage {name!r}: --kind {given} but {cls.__name__} is a {kind}")
        return kind
    current = p.stages.get(name)
    has_subscribers = current is not None and p.graph.out_degree(name) > 0
    kind = given or cells.infer_kind(hooks, has_subscribers, current)
    cells.check_hooks(name, kind, hooks)
    return kind


def _options_differ(stage: Any, given: dict[str, Any]) -> list[str]:
    """The flags whose value is not the stage's now."""
    return [
        BY_NAME[key].flag_name
        for key, value in given.items()
        if getattr(stage, BY_NAME[key].slot, None) != value
    ]


def _explain(p: Pipeline) -> None:
    from IPython.display import display

    display(p.explain())  # Markdown in a notebook, text elsewhere


#: The %pipeline commands that show something of the pipeline.
_VIEWS = {
    "explain": _explain,
    "progress": lambda p: p.progress(),  # a live bar in a notebook
    "show": lambda p: p.draw(),
    "plot": lambda p: p.plot(),
    "dashboard": lambda p: p.dashboard(),
}


def _pipeline_parser() -> _Parser:
    p = _Parser(prog="%pipeline", add_help=False)
    p.add_argument("command")
    p.add_argument("stage", nargs="?")
    p.add_argument("--pipeline")
    p.add_argument("--rewind", action="store_true")
    return p


def _number(stage: str, option: str, text: str | None, low: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(
            f"stage {stage!r}: --{option} must be a whole number, got {text!r}"
        ) from None
    if value < low:
        raise UsageError(f"stage {stage!r}: --{option} must be at least {low}, got {value}")
    return value


@magics_class
class StageMagics(Magics):
    """The magics ``%load_ext genstage_nb`` registers."""

    @property
    def _shell(self) -> Any:
        """The IPython shell the magics are registered with (always set once loaded)."""
        assert self.shell is not None
        return self.shell

    def _pipeline(self, var: str | None, stage: str | None = None) -> Pipeline:
        if var is None:
            default = default_pipeline()
            flow = started_flow()
            if not default.stages and flow is not None:
                return flow.pipeline  # (a notebook that started a Flow and no stages)
            return default
        ns = self._shell.user_ns
        where = f"stage {stage!r}: " if stage else ""
        if var not in ns:
            raise UsageError(f"{where}--pipeline {var}: no such variable in the notebook")
        p = ns[var]
        if isinstance(p, Flow):  # a Flow is shown and driven through its pipeline
            p = p.pipeline
        if not isinstance(p, Pipeline):
            raise UsageError(
                f"{where}--pipeline {var}: is a {type(p).__name__}, "
                "not a genstage_nb Pipeline (or Flow)"
            )
        return p

    @cell_magic
    def stage(self, line: str, cell: str) -> None:
        """%%stage NAME [--kind K] [--subscribe-to A,B] [--max-demand N]
        [--min-demand N] [--cancel MODE] [--pipeline VAR] [--OPTION VALUE ...]

        Build the stage NAME from the hooks (or the one stage class) this cell defines and
        add it to the pipeline; re-running the cell swaps its code in place, even while
        the pipeline runs. Every stage option is a flag (``--concurrency 4``,
        ``--restart permanent``; an object is a Python expression in the notebook:
        ``--executor pool``); a changed option builds the stage again (stopped pipeline).
        """
        args = _stage_parser().parse_args(shlex.split(line))
        name = args.name
        p = self._pipeline(args.pipeline, name)
        _check_line(name, args)
        options = _stage_options(name, args, self._shell.user_ns)
        max_demand = _number(name, "max-demand", args.max_demand, 1)
        min_demand = _number(name, "min-demand", args.min_demand, 0)
        producers = _producers(p, name, args.subscribe_to)
        try:
            hooks, cls, returns = cells.cell_contents(
                name, cell, self._shell.user_ns, self._cell_file(line, cell), first_line=2
            )
            kind = _kind_of(p, name, args.kind, hooks, cls)
            for producer in producers:
                self._ensure_producer(p, producer)
            stage, action = self._define(p, name, kind, hooks, cls, options)
            self._subscribe(p, stage, producers, max_demand, min_demand, args.cancel)
        except cells.CellCodeError as exc:
            raise _as_cell_error(self.shell, exc) from None
        except CellError as exc:
            raise UsageError(str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"stage {name!r}: {exc}") from None
        links = f", subscribed to {', '.join(producers)}" if producers else ""
        note = ""
        if args.kind is None and stage.kind == "consumer" and returns:
            note = (
                "; its handle_events returns events: it becomes a producer-consumer when a "
                "stage subscribes to it (or give --kind producer_consumer)"
            )
        print(f"stage {name!r} ({stage.kind}) {action}{links}{note}")

    def _define(
        self, p: Pipeline, name: str, kind: str, hooks: dict, cls: type | None, options: dict
    ) -> tuple[Any, str]:
        """Add the cell's stage, or give the one there its new code (in place), or build
        it again (a changed option or kind): the stage, and what was done."""
        current = p.stages.get(name)
        if current is None:
            stage = cells.new_stage(name, kind, hooks, cls, options)
            p.add(stage, name=name)
            return stage, "added"
        changed = _options_differ(current, options)
        if changed or current.kind != kind:
            kept = cells.options_of_stage(current)
            new = cells.new_stage(name, kind, hooks, cls, {**kept, **options})
            if changed:
                why = f"its {', '.join(changed)} would change"
                return self._replace(p, current, new, why), f"rebuilt with {', '.join(changed)}"
            return self._replace(p, current, new), f"now a {kind}"
        if cls is None and not isinstance(current, _CellHooks):
            current.__class__ = CELL_CLASSES[kind]
        cells.swap_code(current, hooks, cls)
        action = "code replaced"
        failure = p.paused.get(name)
        if failure is not None:
            # The fix of a paused stage: call the failed hook again with it.
            p.resume(name)
            n = len(failure.events)
            batch = f" with its batch of {n} event{'s' * (n != 1)}" if n else ""
            action += f"; resumed: {failure.hook} runs again{batch}"
        return current, action

    def _cell_file(self, line: str, cell: str) -> str | None:
        """The name IPython gives this cell's code ("Cell In[n]" in tracebacks), with
        the cell's text in linecache, so errors and tracebacks show the cell's lines."""
        compiler = getattr(self.shell, "compile", None)
        if compiler is None or not hasattr(compiler, "cache"):
            return None
        raw = f"%%stage {line}\n{cell}"
        return compiler.cache(raw, self._shell.execution_count, raw_code=raw)

    def _ensure_producer(self, p: Pipeline, name: str) -> None:
        """A consumer cell that gets a subscriber becomes a producer-consumer."""
        stage = p.stages[name]
        if stage.kind != "consumer":
            return
        if not isinstance(stage, _CellHooks) or "handle_event" in stage._cell_hooks:
            raise CellError(
                f"stage {name!r} is a consumer and cannot be subscribed to; re-run its cell "
                f"with --kind producer_consumer"
            )
        hooks = {h: getattr(stage, h) for h in stage._cell_hooks}
        kept = cells.options_of_stage(stage)
        self._replace(p, stage, cells.new_stage(name, "producer_consumer", hooks, None, kept))

    def _replace(self, p: Pipeline, old: Any, new: Any, why: str | None = None) -> Any:
        """Put ``new`` in the place of ``old`` (same name and links); only when idle."""
        name = old.name
        if p.running:
            if why is not None:
                raise CellError(
                    f"stage {name!r}: {why}, which takes a new stage; stop the pipeline "
                    f"first (%pipeline stop)"
                )
            raise CellError(
                f"stage {name!r} would change from {old.kind} to {new.kind}; stop the "
                f"pipeline first (%pipeline stop), or give the cell --kind {old.kind}"
            )
        new.__dict__.update(
            {
                k: v
                for k, v in old.__dict__.items()
                if not k.startswith("_") and k not in cells.HOOKS and k not in OPTION_SLOTS
            }
        )
        p._replace(old, new)
        return new

    def _subscribe(
        self,
        p: Pipeline,
        stage: Any,
        producers: list[str],
        max_demand: int | None,
        min_demand: int | None,
        cancel: str | None,
    ) -> None:
        """Make the stage's subscriptions match the cell's options (live if running)."""
        name = stage.name
        current = {a: d["subscription"] for a, _, d in p.graph.in_edges(name, data=True)}
        for producer, sub in current.items():
            if producer not in producers:
                p.unlink(sub)
        for producer in producers:
            sub = current.get(producer)
            if sub is None:
                p.link(
                    producer,
                    stage,
                    max_demand=max_demand or 1000,
                    min_demand=min_demand,
                    cancel=cancel or "permanent",
                )
            elif max_demand is not None or min_demand is not None:
                sub.tune(max_demand=max_demand, min_demand=min_demand)

    @line_magic
    def pipeline(self, line: str) -> Any:
        """%pipeline start|stop|status|resume NAME [--rewind]|skip NAME|explain|progress|
        peek NAME|show|plot|dashboard|reset [--pipeline VAR]"""
        args = _pipeline_parser().parse_args(shlex.split(line))
        command = args.command
        if command not in PIPELINE_COMMANDS:
            raise UsageError(
                f"%pipeline: unknown command {command!r} (use {', '.join(PIPELINE_COMMANDS)})"
            )
        p = self._pipeline(args.pipeline)
        if command == "start":
            if p.running:
                raise UsageError("%pipeline start: the pipeline is already running")
            try:
                p.start()
            except RuntimeError as exc:
                raise UsageError(f"%pipeline start: {exc}") from None
            print(f"pipeline started in the background: {len(p.stages)} stages")
            return None
        if command == "stop":
            p.stop()
            print("pipeline stopping")
            return None
        if args.rewind and command != "resume":
            raise UsageError(f"%pipeline {command}: --rewind goes with resume only")
        if command in ("resume", "skip"):
            return self._go_on(p, command, args.stage, args.rewind)
        if command == "peek":
            if args.stage is None:
                raise UsageError("%pipeline peek: which stage? (%pipeline peek NAME)")
            try:
                return p.peek(args.stage)
            except (KeyError, ValueError) as exc:
                raise UsageError(f"%pipeline peek {args.stage}: {exc}") from None
        if args.stage is not None:
            raise UsageError(f"%pipeline {command}: takes no stage name (got {args.stage!r})")
        if command == "status":
            if p.resumed:
                print(p.resumed)  # (a durable run: where it started)
            for name, failure in p.paused.items():
                print(describe(p, name, failure), file=sys.stderr)
            for record in current_warnings(p.warnings):
                print(f"warning: {record}")
            return p.metrics.totals()[
                ["kind", "status", "events_in", "events_out", "buffer_size", "dropped", "failed"]
            ]
        if command in _VIEWS:
            return _VIEWS[command](p)
        # reset: the same object, emptied (a notebook's p stays valid)
        was_running = p.running
        p.reset()
        print(
            "pipeline stopping; it is emptied once its stages have stopped"
            if was_running
            else "pipeline reset"
        )
        return None

    def _go_on(self, p: Pipeline, command: str, name: str | None, rewind: bool = False) -> None:
        """%pipeline resume NAME [--rewind] / %pipeline skip NAME."""
        if name is None:
            paused = list(p.paused)
            if not paused:
                raise UsageError(f"%pipeline {command}: no stage is paused")
            if len(paused) > 1:
                raise UsageError(f"%pipeline {command}: which stage? (paused: {', '.join(paused)})")
            (name,) = paused  # the one paused stage
        try:
            if rewind:
                p.resume(name, rewind=True)
            else:
                getattr(p, command)(name)
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"%pipeline {command} {name}: {exc}") from None
        done = "resumed" if command == "resume" else "skipped its failed batch and goes on"
        if rewind:
            done = "resumed: every stage goes back to the last checkpoint and runs again"
        print(f"stage {name!r} {done}")


class _CellCodeShown(Exception):
    """An error of the cell's own code, shown as IPython shows it for any cell: a
    syntax error with the cell's line and a caret, an exception with the cell's frames
    only (IPython renders ``_render_traceback_``). Its class is named after the
    original error (``SyntaxError``, ``NameError``, ...); ``.error`` is the original."""

    error: BaseException
    _stb: list[str]

    def _render_traceback_(self) -> list[str]:
        return self._stb


_SHOWN: dict[type, type] = {}


def _as_cell_error(shell: Any, failure: cells.CellCodeError) -> _CellCodeShown:
    error = failure.error
    kind = type(error)
    if isinstance(error, SyntaxError):
        stb = shell.SyntaxTB.structured_traceback(kind, error, [])
    else:
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != failure.filename:
            tb = tb.tb_next  # the frames of the magic that ran the cell are not the user's
        stb = shell.InteractiveTB.structured_traceback(kind, error, tb)
    cls = _SHOWN.get(kind)
    if cls is None:
        cls = _SHOWN[kind] = type(kind.__name__, (_CellCodeShown,), {})
    shown = cls(str(error))
    shown.error = error
    shown._stb = stb
    return shown
