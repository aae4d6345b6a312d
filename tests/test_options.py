"""The option table (core/options.py) is the one place options are declared: stage
construction, the classes' accepted options, the docs' list and the fused loop's
eligibility all come from it."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import pytest

import genstage_nb as gs
from genstage_nb.core import options
from genstage_nb.core.process import fits_loop

KIND_CLASSES = {
    options.PRODUCER: lambda **o: gs.from_iterable(iter([1]), **o),  # (no len(): no total)
    options.PRODUCER_CONSUMER: lambda **o: gs.producer_consumer(lambda e: e, **o),
    options.CONSUMER: lambda **o: gs.consumer(lambda e: None, **o),
}


class Each(gs.ConcurrentConsumer):
    async def handle_event(self, event):
        return None


KIND_CLASSES[options.CONCURRENT_CONSUMER] = lambda **o: Each(**o)


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(1) as executor:
        yield executor


def other_value(option, pool):
    """A valid value of ``option`` other than its default."""
    return {
        "name": "other",
        "restart": "permanent",
        "max_restarts": 7,
        "max_seconds": 1.5,
        "retry": gs.Retry(attempts=2),
        "rate_limit": (10, 1.0),
        "buffer_size": 5,
        "buffer_keep": "first",
        "dispatcher": gs.BroadcastDispatcher,
        "executor": pool,
        "concurrency": 2,
        "demand": "accumulate",
        "total": 3,
    }[option.name]


def test_every_option_has_an_example_here(pool):
    for option in options.OPTIONS:
        other_value(option, pool)  # (a KeyError names the option this file must learn)


@pytest.mark.parametrize("kind", options.KINDS)
def test_a_stage_takes_exactly_the_options_of_its_kind(kind, pool):
    make = KIND_CLASSES[kind]
    taken = {option.name for option in options.options_of(kind)}
    for option in options.OPTIONS:
        given = {option.name: other_value(option, pool)}
        if option.name == "concurrency":
            given["executor"] = pool  # (a sync hook in flight twice needs an executor)
        if option.name in taken:
            stage = make(**given)
            assert getattr(stage, option.slot) == given[option.name]
        else:
            with pytest.raises(TypeError, match=f"unknown option {option.name!r}"):
                make(**given)


@pytest.mark.parametrize("kind", options.KINDS)
def test_defaults_come_from_the_table(kind):
    stage = KIND_CLASSES[kind]()
    for option in options.options_of(kind):
        value = getattr(stage, option.slot)
        default = option.default_for(kind)
        if option.name == "dispatcher":
            assert value is gs.DemandDispatcher  # (None stands for it)
        else:
            assert value == default, option.name


@pytest.mark.parametrize("kind", options.KINDS)
def test_an_option_the_loop_does_not_handle_keeps_the_stage_off_it(kind, pool):
    make = KIND_CLASSES[kind]
    assert fits_loop(make())
    for option in options.options_of(kind):
        given = {option.name: other_value(option, pool)}
        if option.name == "concurrency":
            given["executor"] = pool
        assert fits_loop(make(**given)) is (
            option.fused and all(options.BY_NAME[name].fused for name in given)
        ), option.name


def test_a_new_option_is_off_the_loop_until_it_says_otherwise(monkeypatch):
    fresh = options.Option(
        "window", frozenset(options.KINDS), None, lambda label, value, given: value, "doc", False
    )
    monkeypatch.setattr(options, "OPTIONS", (*options.OPTIONS, fresh))
    stage = gs.consumer(lambda e: None, window=3)  # checked and set by the table alone
    assert stage.window == 3 and not fits_loop(stage)
    assert fits_loop(gs.consumer(lambda e: None))  # at its default: on the loop
    handled = dataclasses.replace(fresh, fused=True)
    monkeypatch.setattr(options, "OPTIONS", (*options.OPTIONS[:-1], handled))
    assert fits_loop(gs.consumer(lambda e: None, window=3))


def test_a_chain_with_a_retry_runs_on_the_message_path_and_keeps_its_books():
    p = gs.Pipeline()
    seen = []
    src = p.add(gs.from_iterable(range(50)), name="src")
    sink = p.add(gs.consumer(seen.extend, retry=gs.Retry(attempts=2)), name="sink")
    p.link(src, sink, max_demand=1)
    p.run_sync()
    assert seen == list(range(50))
    gs.check_balance(p)
    assert not sink._process.fits_loop


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"restart": "often"}, "stage 'bad': restart must be one of"),
        ({"max_restarts": -1}, "stage 'bad': max_restarts must be an int >= 0, got -1"),
        ({"max_seconds": 0}, "stage 'bad': max_seconds must be a number > 0, got 0"),
        ({"retry": 3}, "stage 'bad': retry must be a gs.Retry"),
        ({"buffer_size": -1}, "stage 'bad': buffer_size must be an int >= 0 or None"),
        ({"buffer_keep": "middle"}, "stage 'bad': buffer_keep must be 'first' or 'last'"),
        ({"dispatcher": object()}, "stage 'bad': dispatcher must be DemandDispatcher"),
        ({"demand": "later"}, "stage 'bad': demand must be 'forward' or 'accumulate'"),
        ({"name": ""}, "stage 'bad': name must be a non-empty str"),
    ],
)
def test_a_bad_value_names_the_stage_and_the_option(given, message):
    given = {"name": "bad", **given} if "name" not in given else given
    with pytest.raises((TypeError, ValueError)) as info:
        gs.from_iterable([1], **given)
    assert message.replace("'bad'", repr("bad" if given["name"] else "IterableProducer")) in str(
        info.value
    )


def test_every_counter_says_how_the_fused_loop_keeps_it():
    from genstage_nb.core import counters, pump

    counters.check_rules(counters.Counters.__slots__)
    with pytest.raises(ImportError, match=r"keeps \['latency'\]"):
        counters.check_rules((*counters.Counters.__slots__, "latency"))
    source = pump.loop_source(2)
    for name in counters.ON_THE_LOOP:
        assert f"c.{name} += " in source
    for name in counters.OFF_THE_LOOP:
        assert f"c.{name}" not in source
