"""Cells that run again: ``Pipeline.add`` of a name the pipeline has.

When the pipeline is not running, the new stage replaces the old one in its links;
when it runs, the old stage takes the new one's code in place (its class, hooks and
a ``gs.map``'s function) and keeps its state, buffer and links, as a re-run
``%%stage`` cell does.
"""

from __future__ import annotations

from ..core.options import options_of
from ..core.process import Process
from ..core.remote import is_async
from ..core.stage import HOOKS, Stage
from ..core.subscription import Subscription
from .parts import Part


def swap_in_place(name: str, old: Stage, new: Stage, proc: Process) -> None:
    """Give the running stage ``old`` the code of ``new`` in place: its class, its hooks
    (and a ``gs.map``'s function); its state, buffer and links stay. The next batch runs
    the new code (a batch in flight finishes with the old). Refused, changing nothing,
    when the kind, an option or how the work runs (sync or async) would change."""
    where = f"Pipeline.add: stage {name!r} runs"
    if new.kind != old.kind:
        raise ValueError(
            f"{where} as a {old.kind}; a {new.kind} cannot take its place while the pipeline "
            f"runs: stop the pipeline first"
        )
    kind = getattr(old, "_option_kind", old.kind)
    changed = [
        option.name
        for option in options_of(kind)
        if option.name != "name"
        and getattr(old, option.slot, None) != getattr(new, option.slot, None)
    ]
    if changed:
        raise ValueError(
            f"{where}; its option {changed[0]} would change, which takes a new stage: stop "
            f"the pipeline first"
        )
    fn = getattr(new, "_gs_map", None)
    if (
        (fn is None) != (getattr(old, "_gs_map", None) is None)
        or (
            fn is not None and is_async(fn) != is_async(old._gs_map)  # type: ignore[attr-defined]
        )
        or is_async(getattr(new, "handle_events", None))
        != is_async(getattr(old, "handle_events", None))
    ):
        raise ValueError(
            f"{where}; its work would change between sync and async (or gs.map and not): stop "
            f"the pipeline first"
        )
    if type(new) is not type(old):
        try:
            old.__class__ = type(new)
        except TypeError as exc:
            raise ValueError(
                f"{where}; {type(new).__name__} cannot take its place: {exc}"
            ) from None
    for hook in HOOKS:
        if hook in new.__dict__:
            setattr(old, hook, new.__dict__[hook])
        elif hook in old.__dict__:
            delattr(old, hook)
    if fn is not None:
        old._gs_map = fn  # type: ignore[attr-defined]
        proc._map_fn = fn


class Rerunning(Part):
    """The re-run role of ``Pipeline``: a stage added again under its name."""

    def _add_again(self, name: str, new: Stage) -> Stage:
        """``add`` of a name the pipeline has: replace the stage, or swap its code."""
        old = self._graph.nodes[name]["stage"]
        if not self._running:
            self._replace(old, new)
            print(f"stage {name!r} replaced (the pipeline is not running); its links kept")
            return new
        swap_in_place(name, old, new, self._procs[name])
        action = "its code swapped in place (the pipeline runs); its state, buffer and links kept"
        failure = self._whole.paused.get(name)
        if failure is not None:
            self._whole.resume(name)
            action += f"; resumed: {failure.hook} runs again"
        print(f"stage {name!r}: {action}")
        return old

    def _replace(self, old: Stage, new: Stage) -> None:
        """Put ``new`` in the place of ``old`` (same name, same links); only when idle.
        A link the new stage cannot take is refused before anything changes."""
        name = str(old.name)
        ins = [d["subscription"] for _, _, d in self._graph.in_edges(name, data=True)]
        outs = [d["subscription"] for _, _, d in self._graph.out_edges(name, data=True)]
        if ins and not (hasattr(new, "handle_events") or hasattr(new, "handle_event")):
            raise ValueError(
                f"Pipeline.add: stage {name!r} would become a {new.kind}, which cannot take "
                f"its link from {ins[0].producer.name!r}: unlink it first or use another name"
            )
        if outs and not hasattr(new, "emit"):
            raise ValueError(
                f"Pipeline.add: stage {name!r} would become a {new.kind}, which cannot feed "
                f"{outs[0].consumer.name!r}: unlink it first or use another name"
            )
        self._remove(name)
        self._whole.add(new, name=name)
        for sub in ins:
            self._relink(sub, sub.producer, new)
        for sub in outs:
            self._relink(sub, new, sub.consumer)

    def _relink(self, sub: Subscription, producer: Stage, consumer: Stage) -> None:
        """Link ``producer`` to ``consumer`` with ``sub``'s options (a defaulted
        min_demand stays defaulted, so it keeps following max_demand)."""
        self._whole.link(
            producer,
            consumer,
            max_demand=sub.max_demand,
            min_demand=None if sub._min_default else sub.min_demand,
            cancel=sub.cancel,
            partition=sub.partition,
            selector=sub.selector,
        )


__all__ = ["Rerunning", "swap_in_place"]
