"""Executors for stages: thread and process pools, and Dask clusters.

Give a consumer or producer-consumer ``executor=`` and its ``handle_events`` runs there
(see ``genstage_nb.core.remote`` for the protocol). Thread and process pools come from
``concurrent.futures``; for Dask (``pip install genstage_nb[dask]``), ``local_cluster()``
starts a cluster on this machine and returns its client.

>>> import concurrent.futures, genstage_nb as gs
>>> def square(events):
...     return [e * e for e in events]
>>> p = gs.Pipeline(); out = []
>>> with concurrent.futures.ThreadPoolExecutor(2) as pool:
...     sq = p.add(gs.producer_consumer(square, executor=pool, concurrency=2))
...     _ = p.link(p.add(gs.from_iterable(range(6))), sq, max_demand=2)
...     _ = p.link(sq, p.add(gs.consumer(out.extend)))
...     p.run_sync()
>>> out
[0, 1, 4, 9, 16, 25]
"""

from __future__ import annotations

from typing import Any

from .core.remote import is_dask_client


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, **options: Any) -> Any:
    """Start a Dask ``LocalCluster`` of ``n_workers`` processes and return a
    ``Client`` for it (``client.close(); client.cluster.close()`` when done).

    Pass the client as a stage's ``executor=``; ``client.dashboard_link`` is Dask's own
    dashboard, which ``Pipeline.dashboard()`` links beside ours. The scheduler, the
    workers and the dashboard listen on 127.0.0.1 only (``host="127.0.0.1"``,
    ``dashboard_address="127.0.0.1:0"``: pass other values to open them to the network).
    Other keywords go to ``LocalCluster`` (e.g. ``memory_limit``).

    >>> import genstage_nb as gs
    >>> from genstage_nb.executors import local_cluster
    >>> client = local_cluster(n_workers=2)  # doctest: +SKIP
    >>> stage = gs.producer_consumer(sorted, executor=client, concurrency=2)  # doctest: +SKIP
    >>> client.close(); client.cluster.close()  # doctest: +SKIP
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("local_cluster needs Dask: pip install 'genstage_nb[dask]'") from None
    # This machine only, unless told otherwise: ":0" would serve the scheduler and the
    # dashboard (which shows the cluster's work) on every network interface.
    options.setdefault("host", "127.0.0.1")
    options.setdefault("dashboard_address", "127.0.0.1:0")
    options.setdefault("processes", True)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, **options)
    return Client(cluster)


def dask_dashboards(pipeline: Any) -> dict[str, str]:
    """Stage name -> the Dask dashboard link of its executor, for stages on Dask.

    >>> import genstage_nb as gs
    >>> from genstage_nb.executors import dask_dashboards
    >>> p = gs.Pipeline()
    >>> _ = p.add(gs.from_iterable([1]), name="src")
    >>> dask_dashboards(p)  # no stage on Dask
    {}
    """
    links = {}
    for name, stage in pipeline.stages.items():
        executor = getattr(stage, "executor", None)
        if executor is not None and is_dask_client(executor):
            link = getattr(executor, "dashboard_link", None)
            if link:
                links[name] = link
    return links


__all__ = ["dask_dashboards", "local_cluster"]
