"""The Pipeline graph and every bad input a user can give it: clear errors, nothing changed."""

from __future__ import annotations

import networkx as nx
import pytest
from helpers import Counter, Doubler, Forwarder
from hypothesis import given
from hypothesis import strategies as st

import genstage_nb as gs


def test_graph_holds_stages_and_subscriptions():
    p = gs.Pipeline("demo")
    src = p.add(Counter(), name="src")
    dbl = p.add(Doubler(), name="dbl")
    out = p.add(Forwarder(), name="out")
    s1 = p.link(src, dbl, max_demand=10)
    s2 = p.link("dbl", "out")
    g = p.graph
    assert isinstance(g, nx.DiGraph)
    assert list(g.nodes) == ["src", "dbl", "out"]
    assert g.nodes["src"]["stage"] is src and g.nodes["src"]["kind"] == "producer"
    assert g.nodes["dbl"]["kind"] == "producer_consumer"
    assert g.nodes["out"]["kind"] == "consumer"
    assert g.edges["src", "dbl"]["subscription"] is s1
    assert g.edges["dbl", "out"]["subscription"] is s2
    assert p.stages == {"src": src, "dbl": dbl, "out": out}
    assert p.subscriptions == [s1, s2]
    assert (s1.producer, s1.consumer, s1.max_demand, s1.min_demand) == (src, dbl, 10, 5)
    assert (s2.max_demand, s2.min_demand, s2.cancel, s2.pending) == (1000, 500, "permanent", 0)
    assert p.status == {"src": "idle", "dbl": "idle", "out": "idle"}
    assert "src -> dbl" in repr(s1)


def test_unlink_before_running_removes_the_edge():
    p = gs.Pipeline()
    sub = p.link(p.add(Counter()), p.add(Forwarder()))
    p.unlink(sub)
    assert p.graph.number_of_edges() == 0
    with pytest.raises(ValueError, match="is not in the pipeline"):
        p.unlink(sub)
    with pytest.raises(TypeError, match="expected a Subscription"):
        p.unlink("counter")


def test_default_names_follow_the_class_and_are_numbered():
    p = gs.Pipeline()
    assert p.add(Counter()).name == "counter"
    assert p.add(Counter()).name == "counter_2"
    assert p.add(gs.from_iterable([])).name == "from_iterable"
    assert p.add(gs.consumer(print)).name == "print"
    assert p.add(gs.consumer(lambda e: None)).name == "consumer"
    assert p.add(Counter(name="explicit")).name == "explicit"


# -- bad input: each row is what a user can get wrong, and what they see ----------------

BAD_STAGE_OPTIONS = [
    (
        lambda: Counter(buffer_size=-1),
        ValueError,
        "stage 'Counter': buffer_size must be an int >= 0 or None",
    ),
    (lambda: Counter(buffer_size=1.5), ValueError, "buffer_size must be an int >= 0 or None"),
    (
        lambda: Counter(buffer_keep="middle"),
        ValueError,
        "stage 'Counter': buffer_keep must be 'first' or 'last'",
    ),
    (lambda: Counter(demand="later"), ValueError, "demand must be 'forward' or 'accumulate'"),
    (lambda: Counter(restart="always"), ValueError, "restart must be one of"),
    (lambda: Counter(max_restarts=-1), ValueError, "max_restarts must be an int >= 0"),
    (lambda: Counter(max_seconds=0), ValueError, "max_seconds must be a number > 0"),
    (lambda: Counter(name=""), TypeError, "name must be a non-empty str"),
    (lambda: Counter(dispatcher="fast"), TypeError, "dispatcher must be DemandDispatcher"),
    (lambda: Counter(dispatcher=gs.PartitionDispatcher), ValueError, "needs its partitions"),
    (
        lambda: Counter(colour="red"),
        TypeError,
        "stage 'Counter': unknown option 'colour' for a producer",
    ),
    (lambda: Forwarder(buffer_size=10), TypeError, "unknown option 'buffer_size' for a consumer"),
    (
        lambda: Doubler(demand="accumulate"),
        TypeError,
        "unknown option 'demand' for a producer_consumer",
    ),
    (lambda: gs.from_iterable(42), TypeError, "from_iterable: expected an iterable"),
    (lambda: gs.consumer(42), TypeError, "consumer: expected a function"),
]


@pytest.mark.parametrize(("make", "error", "message"), BAD_STAGE_OPTIONS)
def test_bad_stage_options_name_the_stage_and_option(make, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_stage_option_errors_use_the_given_name():
    with pytest.raises(ValueError, match="stage 'reader': buffer_keep must be"):
        Counter(name="reader", buffer_keep="x")


def pipeline_with_stages():
    p = gs.Pipeline()
    src = p.add(Counter(), name="src")
    dbl = p.add(Doubler(), name="dbl")
    out = p.add(Forwarder(), name="out")
    return p, src, dbl, out


BAD_LINKS = [
    (
        lambda p, s, d, o: p.link(o, d),
        TypeError,
        "link out -> dbl: 'out' is a consumer and cannot be used as a producer",
    ),
    (
        lambda p, s, d, o: p.link(d, s),
        TypeError,
        "link dbl -> src: 'src' is a producer and cannot be used as a consumer",
    ),
    (lambda p, s, d, o: p.link(s, Forwarder()), ValueError, "is not in the pipeline"),
    (lambda p, s, d, o: p.link("nope", o), ValueError, "no stage named 'nope'"),
    (lambda p, s, d, o: p.link(s, 3), TypeError, "expected a stage or a stage name"),
    (
        lambda p, s, d, o: p.link(d, d),
        ValueError,
        "link dbl -> dbl: a stage cannot subscribe to itself",
    ),
    (
        lambda p, s, d, o: p.link(s, o, max_demand=10, min_demand=10),
        ValueError,
        "link src -> out: min_demand (10) must be below max_demand (10)",
    ),
    (
        lambda p, s, d, o: p.link(s, o, max_demand=0),
        ValueError,
        "link src -> out: max_demand (0) must be at least 1",
    ),
    (lambda p, s, d, o: p.link(s, o, max_demand="10"), TypeError, "max_demand must be an int"),
    (
        lambda p, s, d, o: p.link(s, o, cancel="sometimes"),
        ValueError,
        "link src -> out: cancel must be one of",
    ),
    (
        lambda p, s, d, o: p.link(s, o, partition=1),
        ValueError,
        "partition= needs a producer with a PartitionDispatcher",
    ),
    (
        lambda p, s, d, o: p.link(s, o, selector=bool),
        ValueError,
        "selector= needs a producer with a BroadcastDispatcher",
    ),
]


@pytest.mark.parametrize(("make", "error", "message"), BAD_LINKS)
def test_bad_links_name_both_stages_and_the_option(make, error, message):
    p, src, dbl, out = pipeline_with_stages()
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(p, src, dbl, out)
    assert p.graph.number_of_edges() == 0  # nothing half-made


def test_duplicate_link_and_duplicate_name():
    p, src, dbl, out = pipeline_with_stages()
    p.link(src, out)
    with pytest.raises(ValueError, match="link src -> out: these stages are already linked"):
        p.link(src, out)
    with pytest.raises(ValueError, match="is already in a pipeline"):
        p.add(src)
    with pytest.raises(TypeError, match="expected a stage"):
        p.add(print)


def test_partition_links_are_checked():
    p = gs.Pipeline()
    src = p.add(Counter(dispatcher=gs.PartitionDispatcher(partitions=2)), name="src")
    a, b, c = (p.add(Forwarder(name=n)) for n in "abc")
    with pytest.raises(
        ValueError, match="link src -> a: a consumer of a PartitionDispatcher must pass partition="
    ):
        p.link(src, a)
    with pytest.raises(
        ValueError, match=r"link src -> a: partition must be one of \[0, 1\], got 7"
    ):
        p.link(src, a, partition=7)
    p.link(src, a, partition=0)
    with pytest.raises(ValueError, match="link src -> b: partition 0 is already taken by 'a'"):
        p.link(src, b, partition=0)
    p.link(src, b, partition=1)
    assert p.graph.number_of_edges() == 2


def test_selector_must_be_callable():
    p = gs.Pipeline()
    src = p.add(Counter(dispatcher=gs.BroadcastDispatcher), name="src")
    with pytest.raises(TypeError, match="link src -> forwarder: selector must be a callable"):
        p.link(src, p.add(Forwarder()), selector="evens")


def test_stage_outside_a_pipeline_cannot_send_or_emit():
    c = Counter()
    with pytest.raises(RuntimeError, match="send\\(\\) needs the stage to be in a pipeline"):
        c.send("x")
    with pytest.raises(RuntimeError, match="emit\\(\\) needs the stage to be in a pipeline"):
        c.emit([1])
    assert c.buffered == 0
    assert c.demand_mode == "forward"


def test_stop_timeout_is_checked():
    with pytest.raises(ValueError, match="stop: timeout must be a number of seconds >= 0"):
        gs.Pipeline().stop(timeout=-1)


def test_subclass_that_forgets_super_init_still_works():
    class Lazy(gs.Consumer):
        def __init__(self, label):
            self.label = label

        def handle_events(self, events):
            self.seen = events

    p = gs.Pipeline()
    lazy = Lazy("x")
    p.link(p.add(gs.from_iterable([1, 2])), p.add(lazy))
    p.run_sync()
    assert lazy.seen == [1, 2]
    assert lazy.restart == "temporary"


def test_public_names_match_the_design():
    expected = {
        "Producer",
        "ProducerConsumer",
        "Consumer",
        "ConcurrentConsumer",
        "Pipeline",
        "PipelineError",
        "Failure",
        "Subscription",
        "DemandDispatcher",
        "BroadcastDispatcher",
        "PartitionDispatcher",
        "from_iterable",
        "producer",
        "producer_consumer",
        "consumer",
    }
    assert expected <= set(gs.__all__)
    for name in gs.__all__:
        assert getattr(gs, name).__doc__, name


def test_importing_the_package_does_not_import_display_libraries():
    import subprocess
    import sys

    code = (
        "import sys, genstage_nb; "
        "print(sorted(m for m in ('pandas', 'matplotlib', 'ipywidgets', 'IPython') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@given(
    kind=st.sampled_from([range, list, tuple]),
    size=st.integers(0, 300),
    demands=st.lists(st.integers(1, 200), min_size=1, max_size=40),
)
def test_from_iterable_takes_a_sequence_in_order_whatever_the_demands(kind, size, demands):
    """A sequence is taken one event, an iterator's step or a slice at a time (by the
    demand): whatever the mix, every item once, in order, and finish() once the end is
    reached."""
    stage = gs.from_iterable(range(size) if kind is range else kind(range(size)))
    finished: list = []
    stage.finish = lambda: finished.append(True)  # (no pipeline here)
    taken: list = []
    for demand in demands:
        events = stage.handle_demand(demand)
        assert len(events) <= demand
        taken.extend(events)
        if len(events) < demand:
            break
    assert taken == list(range(min(size, sum(demands))))
    assert finished == ([True] if sum(demands) > size else [])
