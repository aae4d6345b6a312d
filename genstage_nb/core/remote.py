"""Handlers that run elsewhere: the ``executor=`` and ``concurrency=`` stage options.

A consumer or producer-consumer given ``executor=`` (any ``concurrent.futures.Executor``,
or a ``dask.distributed.Client``) sends each batch to ``executor.submit(handle_events,
batch)`` instead of calling the hook on the event loop. Up to ``concurrency`` batches
are in flight at once; the stage's task keeps serving asks, calls and cancels meanwhile,
and the results are taken in the order the batches were sent, so the events a
producer-consumer emits keep their order. Demand is settled when a batch is sent, so
the events a stage holds are at most ``max_demand`` per subscription (asked, waiting)
plus the batches in flight.

Only the standard library here: Dask is recognised by its module name, and its pickler
imported only to check a handler bound for a Dask cluster.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import pickle
from typing import Any


def is_dask_client(executor: Any) -> bool:
    return type(executor).__module__.split(".")[0] == "distributed"


def check_executor(label: str, executor: Any, concurrency: Any) -> None:
    """Raise naming the stage and the option if they are not usable."""
    if executor is not None and not (
        isinstance(executor, concurrent.futures.Executor) or is_dask_client(executor)
    ):
        raise TypeError(
            f"stage {label!r}: executor must be a concurrent.futures.Executor (a thread or "
            f"process pool) or a dask.distributed.Client, got {executor!r}"
        )
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(
            f"stage {label!r}: concurrency must be an int >= 1 (batches in flight), "
            f"got {concurrency!r}"
        )


def check_concurrency(stage: Any) -> None:
    """``concurrency > 1`` without an executor needs an ``async`` handle_events: a sync
    hook runs on the event loop, one batch at a time, whatever ``concurrency`` says."""
    concurrency = getattr(stage, "concurrency", 1)
    if concurrency <= 1 or getattr(stage, "executor", None) is not None:
        return
    fn = getattr(stage, "_gs_map", None)  # gs.map's function, called per event
    hook = fn if fn is not None else getattr(stage, "handle_events", None)
    if hook is None or is_async(hook):
        return
    if fn is not None:
        raise ValueError(
            f"stage {stage.name!r}: concurrency={concurrency} needs an executor for a sync "
            f"function (it would run one call at a time on the event loop): pass "
            f"executor=ThreadPoolExecutor({concurrency}) to make {concurrency} calls at "
            f"once, or give gs.map an async function"
        )
    raise ValueError(
        f"stage {stage.name!r}: concurrency={concurrency} needs an executor for a sync "
        f"handle_events (it would run one batch at a time on the event loop): pass "
        f"executor=ThreadPoolExecutor({concurrency}) to run {concurrency} batches at once, "
        f"or make handle_events async"
    )


def is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )


def needs_pickling(executor: Any) -> bool:
    return isinstance(executor, concurrent.futures.ProcessPoolExecutor) or is_dask_client(executor)


def check_picklable(label: str, hook: str, handler: Any, executor: Any) -> None:
    """A handler bound for another process must pickle: say so before any event moves."""
    if not needs_pickling(executor):
        return
    if is_dask_client(executor):
        from distributed.protocol.pickle import dumps
    else:
        dumps = pickle.dumps
    try:
        dumps(handler)
    except Exception as exc:
        where = "a Dask cluster" if is_dask_client(executor) else "a process pool"
        raise TypeError(
            f"stage {label!r}: {hook} cannot be sent to {where}: it does not pickle "
            f"({type(exc).__name__}: {exc}); define it at the top level of a module (not "
            f"in a notebook cell or as a lambda), or use a thread pool"
        ) from exc


def submitter(executor: Any) -> Any:
    """``submit(fn, batch) -> future`` for ``executor`` (a future with ``result()``)."""
    if is_dask_client(executor):
        # pure=False: two equal batches are two tasks, not one cached result.
        return lambda fn, batch: executor.submit(fn, batch, pure=False)
    return executor.submit


class Job:
    """One batch sent to the executor."""

    __slots__ = ("ask", "attempts", "batch", "done", "error", "future", "result", "sub")

    def __init__(self, sub: Any, batch: list, ask: int) -> None:
        self.sub = sub
        self.batch = batch
        self.ask = ask  # demand to ask upstream when it is sent (0 once asked)
        self.future: Any = None
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.attempts: list = []  # retry=: every call's exception, when it failed for good

    def reset(self) -> None:
        self.future = None
        self.done = False
        self.result = None
        self.error = None


__all__ = ["Job", "check_executor", "check_picklable", "is_dask_client", "submitter"]
