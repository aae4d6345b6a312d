"""Random pipelines over the whole option space (``tests/generated.py``), on both
backends: every run must keep every promise that module lists.

The ordinary run draws 1,000 pipelines per backend, derandomized (a run is repeatable);
the ``slow`` campaign 10,000 per backend, 20,000 in all (CI runs both), from the seed
``GENSTAGE_NB_SEED`` (0 by default: another seed is an independent campaign).
``GENSTAGE_NB_CAMPAIGN=N`` sets the campaign's size per backend. A failure shrinks to a
small spec, printed with the assertion.
"""

from __future__ import annotations

import os

import anyio
import pytest
from generated import describe, pipelines, run_spec
from hypothesis import HealthCheck, given, note, seed, settings

BACKENDS = ["asyncio", "trio"]
CAMPAIGN = int(os.environ.get("GENSTAGE_NB_CAMPAIGN", "10000"))
SEED = int(os.environ.get("GENSTAGE_NB_SEED", "0"))
SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": list(HealthCheck),
    "print_blob": True,
}


def check(spec, backend):
    note(describe(spec))
    anyio.run(run_spec, spec, backend=backend)


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("backend", BACKENDS)
@settings(
    max_examples=int(os.environ.get("GENSTAGE_NB_EXAMPLES", "1000")), derandomize=True, **SETTINGS
)
@given(spec=pipelines())
def test_generated_pipelines_keep_every_promise(backend, spec):
    check(spec, backend)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("backend", BACKENDS)
@seed(SEED)
@settings(max_examples=CAMPAIGN, derandomize=False, **SETTINGS)
@given(spec=pipelines())
def test_generated_campaign(backend, spec):
    check(spec, backend)


def test_a_stream_leaving_a_broadcast_frees_what_was_buffered_for_it(anyio_backend):
    """Found by a campaign: a stream (the slowest consumer of a broadcast) left while
    events waited in the buffer for it, and no new demand came: the buffer was never
    served (a stall). Fails about half the runs without the fix."""
    from generated import Link, Node, Spec

    spec = Spec(
        nodes=[
            Node("s0", "source", "less", dispatcher="broadcast", n=97, accumulate=True),
            Node("s1", "source", "less", n=80),
            Node("p0", "pc", "executor", transform="expand", dispatcher="broadcast"),
            Node("p1", "pc", "map", transform="filter", concurrency=8),
            Node("p2", "pc", "executor", transform="expand", dispatcher="partition", discards=3),
            Node("c0", "sink", "plain"),
            Node("c1", "sink", "plain"),
        ],
        links=[
            Link("s0", "p0", 50, None),
            Link("s1", "p1", 50, 0),
            Link("p0", "p2", 3, 2, selector=2),
            Link("p2", "c0", 2, None, partition=0),
            Link("p1", "c0", 2, None),
            Link("p0", "c1", 50, None, selector=3),
        ],
        stream=("s0", 1, 1, 1),
    )
    for _ in range(8):
        anyio.run(run_spec, spec, backend=anyio_backend)


def test_an_event_failing_as_a_stop_cancels_a_concurrent_consumer_is_recorded(anyio_backend):
    """Found by a campaign (seed 31337): a ConcurrentConsumer's failed event was handed
    to the stage's task as a coroutine, and the stop's cancellation (timeout 0) dropped
    it unstarted: the failure vanished from ``p.failures`` (every run on asyncio)."""
    from generated import Fault, Link, Node, Spec

    spec = Spec(
        nodes=[
            Node("s0", "source", "exact", n=143),
            Node("p0", "pc", "plain", dispatcher="partition"),
            Node("p1", "pc", "map", transform="filter", concurrency=8),
            Node("c0", "sink", "concurrent"),
            Node("c1", "sink", "plain"),
            Node(
                "c2", "sink", "concurrent", restart="permanent", fault=Fault("handle_event", 2, 1)
            ),
        ],
        links=[
            Link("s0", "p0", 3, None),
            Link("s0", "p1", 3, None),
            Link("p0", "p1", 2, 0, partition=0),
            Link("s0", "c0", 1, 0),
            Link("s0", "c1", 10, 9),
            Link("p0", "c1", 3, 0, partition=1),
            Link("p1", "c2", 1000, 0),
            Link("p0", "c2", 2, None, partition=2),
        ],
        stop_after=1,
        stop_timeout=0.0,
    )
    for _ in range(5):
        anyio.run(run_spec, spec, backend=anyio_backend)


def test_a_consumer_leaving_whose_cancel_hook_fails_leaves_the_dispatcher_on_resume(
    anyio_backend,
):
    """Found by the generated pipelines (3,000 examples): a stream left a broadcast
    producer-consumer whose ``handle_cancel`` failed; paused and resumed, the hook ran
    again but the consumer's demand stayed in the dispatcher (the rest of the cancel was
    not kept for the resume), so the broadcast waited for ever on a consumer that had
    left: a stall notice, every run, on both backends."""
    from generated import Fault, Link, Node, Spec

    spec = Spec(
        nodes=[
            Node("s0", "source", "exact", n=2, accumulate=True),
            Node(
                "p0",
                "pc",
                "plain",
                dispatcher="broadcast",
                buffer_size=None,
                buffer_keep="first",
                fault=Fault("handle_cancel", 1, 1),
            ),
            Node("c0", "sink", "plain"),
        ],
        links=[Link("s0", "p0", 1, 0), Link("p0", "c0", 1, 0)],
        on_failure="pause",
        on_pause="resume",
        stream=("p0", 0, 1, 1),
    )
    for _ in range(3):
        anyio.run(run_spec, spec, backend=anyio_backend)


def test_a_concurrent_consumer_restarted_handles_again_the_events_the_restart_cut_short(
    anyio_backend,
):
    """Found by a campaign (seed 4343): a restart of a ConcurrentConsumer cancelled its
    event handlers at work, and their events were neither handled again nor counted: its
    demand never came back and the run never ended, without a stall notice (the stage
    looked busy)."""
    from generated import Fault, Link, Node, Spec

    spec = Spec(
        nodes=[
            Node(
                "s0",
                "source",
                "exact",
                asynchronous=True,
                dispatcher="partition",
                discards=5,
                n=145,
                accumulate=True,
            ),
            Node(
                "s1",
                "source",
                "exact",
                asynchronous=True,
                dispatcher="broadcast",
                n=111,
                accumulate=True,
            ),
            Node("p0", "pc", "plain", dispatcher="partition"),
            Node("c0", "sink", "plain"),
            Node("c1", "sink", "plain"),
            Node(
                "c2",
                "sink",
                "concurrent",
                asynchronous=True,
                restart="permanent",
                fault=Fault("handle_event", 2, 2),
            ),
        ],
        links=[
            Link("s1", "p0", 2, None),
            Link("s0", "p0", 2, None, partition=0),
            Link("p0", "c0", 1, 0, partition=0),
            Link("s1", "c0", 2, None),
            Link("s1", "c1", 2, None),
            Link("p0", "c2", 10, None, partition=1),
            Link("s0", "c2", 1000, None, partition=1),
        ],
        on_failure="pause",
        on_pause="resume",
    )
    for _ in range(3):
        anyio.run(run_spec, spec, backend=anyio_backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_concurrent_consumer_counts_an_event_done_as_its_stage_ends(backend):
    """Found by the generator (shrunk): an event whose handler finished just as the
    concurrent consumer ended (its producer finished) was handled, but its count went
    with the stage's last mail, so the progress said 0 of 1."""
    from generated import Link, Node, Spec

    spec = Spec(
        nodes=[
            Node("s0", "source", "exact", n=1, accumulate=True, buffer_size=None),
            Node("s1", "source", "exact", n=0, accumulate=True),
            Node("c0", "sink", "plain"),
            Node("c1", "sink", "plain"),
            Node("c2", "sink", "concurrent"),
        ],
        links=[Link("s1", "c0", 1, 0), Link("s1", "c1", 1, 0), Link("s0", "c2", 1, 0)],
    )
    outcome = anyio.run(run_spec, spec, backend=backend)  # (its checks count the progress)
    assert outcome.pipeline.statistics()["c2"].counts["handled"] == 1
