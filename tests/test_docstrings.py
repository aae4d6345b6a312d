"""Every public name has a docstring with a short, runnable example (run by
``--doctest-modules``); the members users call have a docstring at least."""

from __future__ import annotations

import inspect

import pytest

import genstage_nb as gs
from genstage_nb import executors
from genstage_nb.metrics import Metrics

#: Classes whose public members users call (the API reference lists them).
CLASSES = (gs.Pipeline, gs.Subscription, gs.Stage, gs.Producer, gs.ProducerConsumer, Metrics)

#: Members that must show an example too: what a newcomer calls first.
WITH_EXAMPLES = {
    "Pipeline": {
        "add",
        "link",
        "unlink",
        "run",
        "run_sync",
        "start",
        "stop",
        "wait",
        "stream",
        "plot",
        "draw",
        "dashboard",
        "graph",
        "stages",
        "subscriptions",
    },
    "Subscription": {"tune", "ask"},
    "Stage": {"send", "call"},
    "Producer": {"emit", "finish", "buffered"},
    "Metrics": {"frame", "totals"},
}


def doc(obj):
    return (obj.__doc__ if isinstance(obj, property) else inspect.getdoc(obj)) or ""


@pytest.mark.parametrize("name", gs.__all__)
def test_every_public_name_has_a_docstring_with_an_example(name):
    assert ">>>" in doc(getattr(gs, name)), f"gs.{name} needs a docstring with an example"


@pytest.mark.parametrize("name", ["local_cluster", "dask_dashboards"])
def test_executor_helpers_have_examples(name):
    assert ">>>" in doc(getattr(executors, name))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_public_members_have_docstrings(cls):
    missing = []
    for klass in cls.__mro__:
        if klass is object:
            continue
        for member, value in vars(klass).items():
            if member.startswith("_"):
                continue
            if inspect.ismemberdescriptor(value):
                # A __slots__ attribute: the class docstring describes it.
                if f"``{member}``" not in doc(klass):
                    missing.append(f"{klass.__name__}.{member} (in the class docstring)")
            elif not doc(value).strip():
                missing.append(f"{klass.__name__}.{member}")
            elif member in WITH_EXAMPLES.get(klass.__name__, ()) and ">>>" not in doc(value):
                missing.append(f"{klass.__name__}.{member} (example)")
    assert not missing, missing
