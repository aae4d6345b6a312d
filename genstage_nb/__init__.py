"""genstage_nb: back-pressured dataflow stages for Python and Jupyter.

Stages (producers, producer-consumers, consumers) exchange events with GenStage's
demand-driven back-pressure: a consumer asks for at most ``max_demand`` events and asks
again as it drains, so no stage takes more work than it can handle.

>>> import genstage_nb as gs
>>> p = gs.Pipeline()
>>> total = []
>>> src = p.add(gs.from_iterable(range(1000)), name="numbers")
>>> inc = p.add(gs.producer_consumer(lambda events: [e + 1 for e in events]), name="inc")
>>> out = p.add(gs.consumer(lambda events: total.append(sum(events))), name="sum")
>>> _ = p.link(src, inc, max_demand=100)
>>> _ = p.link(inc, out, max_demand=100)
>>> p.run_sync()
>>> sum(total)
500500
"""

from typing import Any

from .core.buffer import Buffer
from .core.dispatchers import BroadcastDispatcher, DemandDispatcher, Dispatcher
from .core.errors import Failure, PipelineError
from .core.factories import (  # noqa: A004
    batcher,
    consumer,
    from_iterable,
    map,
    producer,
    producer_consumer,
)
from .core.partition import PartitionDispatcher
from .core.policies import RateLimit, Retry
from .core.sqlite_sink import to_sqlite
from .core.stage import ConcurrentConsumer, Consumer, Producer, ProducerConsumer, Stage
from .core.subscription import Subscription
from .explain import Explanation
from .flow import Flow, Window, WindowResult
from .metrics import check_balance
from .pipeline import Pipeline, default_pipeline
from .progress import Progress
from .stalls import Stall
from .watchdog import SlowHandler


def load_ipython_extension(ipython: Any) -> None:  # (IPython calls it)
    """``%load_ext genstage_nb``: register the ``%%stage`` and ``%pipeline`` magics.

    In a notebook cell (IPython calls this function)::

        %load_ext genstage_nb

    >>> from IPython.testing.globalipapp import get_ipython
    >>> import genstage_nb
    >>> shell = get_ipython()
    >>> genstage_nb.load_ipython_extension(shell)
    >>> sorted(m for m in shell.magics_manager.magics["cell"] if m == "stage")
    ['stage']
    """
    from .notebook import load_ipython_extension as load

    load(ipython)


__version__ = "0.1.0"

__all__ = [
    "BroadcastDispatcher",
    "Buffer",
    "ConcurrentConsumer",
    "Consumer",
    "DemandDispatcher",
    "Explanation",
    "Dispatcher",
    "Failure",
    "Flow",
    "PartitionDispatcher",
    "Pipeline",
    "PipelineError",
    "Producer",
    "ProducerConsumer",
    "Progress",
    "RateLimit",
    "Retry",
    "SlowHandler",
    "Stall",
    "Stage",
    "Subscription",
    "Window",
    "WindowResult",
    "batcher",
    "to_sqlite",
    "check_balance",
    "consumer",
    "default_pipeline",
    "from_iterable",
    "load_ipython_extension",
    "map",
    "producer",
    "producer_consumer",
]
