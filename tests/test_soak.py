"""Soak: ten million events through four stages with a slow consumer; memory stays flat.

Marked ``slow`` (a few seconds to half a minute); CI runs it with the rest. Memory is the
process's resident set read from /proc (Linux), sampled as the consumer drains; internal
structures (mailboxes, buffers, dispatcher queues, outstanding demand, metric samples)
are measured at the same points and must stay within their bounds.
"""

from __future__ import annotations

import gc
import os
import sys

import pytest

import genstage_nb as gs
from genstage_nb.metrics import HISTORY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm"),
]

EVENTS = 10_000_000
SAMPLES = 20
MAX_DEMAND = 1000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Numbers(gs.Producer):
    def init(self):
        self.n = 0

    def handle_demand(self, demand):
        n = self.n
        end = min(n + demand, EVENTS)
        self.n = end
        if end >= EVENTS:
            self.finish()
        return list(range(n, end))


class SlowSink(gs.Consumer):
    """Does several times the upstream stages' work per event, and measures."""

    def __init__(self, pipeline, **options):
        super().__init__(**options)
        self.pipeline = pipeline
        self.total = 0
        self.seen = 0
        self.next_sample = EVENTS // SAMPLES
        self.rss: list[int] = []
        self.sizes: list[dict[str, int]] = []

    def handle_events(self, events):
        # In order, none lost: the batch continues where the last one ended.
        assert events[0] == 2 * (self.seen + 1), (events[0], self.seen)
        self.total += sum([x * x % 7 for x in events])
        self.seen += len(events)
        if self.seen >= self.next_sample:
            self.next_sample += EVENTS // SAMPLES
            gc.collect()
            self.rss.append(rss_bytes())
            self.sizes.append(structures(self.pipeline))


def structures(p: gs.Pipeline) -> dict[str, int]:
    procs = p._procs.values()
    return {
        "mailbox": max(len(proc.mailbox) for proc in procs),
        "buffer": max(len(proc.buffer) for proc in procs if proc.producing),
        "dispatcher": max(proc.dispatcher.buffered() for proc in procs if proc.producing),
        "undispatched": max(len(proc._undispatched) for proc in procs),
        "pending": max(sub.pending for sub in p.subscriptions),
        "samples": len(p.metrics),
    }


def test_ten_million_events_through_four_stages_keep_memory_flat():
    p = gs.Pipeline("soak", metrics_interval=0.05)
    src = p.add(Numbers(), name="numbers")
    inc = p.add(gs.producer_consumer(lambda events: [e + 1 for e in events]), name="inc")
    dbl = p.add(gs.producer_consumer(lambda events: [2 * e for e in events]), name="double")
    sink = p.add(SlowSink(p), name="sink")
    p.link(src, inc, max_demand=MAX_DEMAND)
    p.link(inc, dbl, max_demand=MAX_DEMAND)
    p.link(dbl, sink, max_demand=MAX_DEMAND)
    p.run_sync()

    assert sink.seen == EVENTS
    gs.check_balance(p)
    totals = p.metrics.totals()
    assert list(totals["events_in"][["inc", "double", "sink"]]) == [EVENTS] * 3

    # Memory: flat from the first sample (after warm-up) to the last, within 10%.
    assert len(sink.rss) == SAMPLES
    warm, last, peak = sink.rss[1], sink.rss[-1], max(sink.rss[1:])
    print(
        f"soak RSS MiB: warm {warm / 2**20:.1f}, peak {peak / 2**20:.1f}, last {last / 2**20:.1f}"
    )
    assert peak <= 1.10 * warm, f"RSS grew from {warm >> 20} MiB to {peak >> 20} MiB"
    assert last <= 1.10 * warm

    # Internal structures stay within their bounds at every sample.
    for sizes in sink.sizes:
        assert sizes["pending"] <= MAX_DEMAND
        assert sizes["buffer"] <= MAX_DEMAND and sizes["dispatcher"] <= MAX_DEMAND
        assert sizes["mailbox"] <= 8
        assert sizes["undispatched"] == 0
        assert sizes["samples"] <= HISTORY
