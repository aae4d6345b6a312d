"""Every stage option, declared once: its name, the stage kinds that take it, its
default, its check, one line of documentation and whether the fused loop handles it.

Stage construction (``Stage._configure``), the options a stage class accepts, the option
list of the docs (``option_table()``, in docs/concepts.md) and the fused path's
eligibility (``fusable``) are all read from ``OPTIONS``: an option added here is checked,
documented and, unless it says ``fused=True``, keeps a stage with a value other than its
default off the fused loop, by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .dispatchers import DemandDispatcher
from .partition import PartitionDispatcher
from .policies import check_rate_limit, check_retry, parse_rate
from .remote import check_executor

#: The kinds of stage, as options see them (a ConcurrentConsumer is a consumer that
#: takes fewer options).
PRODUCER = "producer"
PRODUCER_CONSUMER = "producer_consumer"
CONSUMER = "consumer"
CONCURRENT_CONSUMER = "concurrent_consumer"
KINDS = (PRODUCER, PRODUCER_CONSUMER, CONSUMER, CONCURRENT_CONSUMER)

RESTART_MODES = ("permanent", "transient", "temporary")
DEMAND_MODES = ("forward", "accumulate")
PRODUCER_BUFFER_SIZE = 10_000
#: What a dispatcher must have (the Dispatcher protocol, dispatchers.py).
DISPATCHER_METHODS = ("subscribe", "cancel", "ask", "dispatch", "buffered", "demand_of")

Check = Callable[[str, Any, Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Option:
    """One stage option. ``check(label, value, given)`` returns the value the stage
    keeps, or raises naming the stage (``label``) and the option; ``given`` holds every
    option passed (for the checks that read two together). ``fused``: the fused loop
    (pump.py) runs a stage whatever this option's value is; otherwise only with the
    default. ``per_kind`` overrides ``default`` for some kinds."""

    name: str
    kinds: frozenset[str]
    default: Any
    check: Check
    doc: str
    fused: bool
    attribute: str = ""
    per_kind: Mapping[str, Any] | None = None
    #: How a ``%%stage`` flag's text becomes the value: "int", "number", "text",
    #: "expression" (evaluated in the notebook's namespace) or "rate" (``N/SECONDS``, or
    #: an expression); None: no flag.
    flag: str | None = None

    @property
    def slot(self) -> str:
        """The stage attribute that holds the value."""
        return self.attribute or self.name

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, text: str, namespace: Mapping[str, Any]) -> Any:
        """The value a ``%%stage`` flag's ``text`` gives (ValueError naming the flag)."""
        if self.flag == "text":
            return text
        if self.flag == "rate" and (rate := parse_rate(text)) is not None:
            return rate
        if self.flag in ("expression", "rate"):
            try:
                return eval(text, dict(namespace))  # noqa: S307  (the user's own notebook)
            except Exception as exc:
                raise ValueError(
                    f"{self.flag_name} {text!r}: {type(exc).__name__}: {exc}"
                ) from None
        try:
            return int(text) if self.flag == "int" else float(text)
        except ValueError:
            what = "a whole number" if self.flag == "int" else "a number"
            raise ValueError(f"{self.flag_name} must be {what}, got {text!r}") from None

    def default_for(self, kind: str) -> Any:
        if self.per_kind is not None and kind in self.per_kind:
            return self.per_kind[kind]
        return self.default


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _name(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"stage {label!r}: name must be a non-empty str, got {value!r}")
    return value


def _restart(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    if value not in RESTART_MODES:
        raise ValueError(f"stage {label!r}: restart must be one of {RESTART_MODES}, got {value!r}")
    return value


def _max_restarts(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    if not _is_int(value) or value < 0:
        raise ValueError(f"stage {label!r}: max_restarts must be an int >= 0, got {value!r}")
    return value


def _max_seconds(label: str, value: Any, given: Mapping[str, Any]) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (value > 0):
        raise ValueError(f"stage {label!r}: max_seconds must be a number > 0, got {value!r}")
    return float(value)


def _retry(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    return check_retry(label, value)


def _rate_limit(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    check_rate_limit(label, value)
    return value


def _buffer_size(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    if value is not None and (not _is_int(value) or value < 0):
        raise ValueError(
            f"stage {label!r}: buffer_size must be an int >= 0 or None (unbounded), got {value!r}"
        )
    return value


def _buffer_keep(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    if value not in ("first", "last"):
        raise ValueError(f"stage {label!r}: buffer_keep must be 'first' or 'last', got {value!r}")
    return value


def _dispatcher(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    if value is None:
        return DemandDispatcher
    if value is PartitionDispatcher:
        raise ValueError(
            f"stage {label!r}: dispatcher PartitionDispatcher needs its partitions: pass "
            f"PartitionDispatcher(partitions=N)"
        )
    if all(hasattr(value, method) for method in DISPATCHER_METHODS):
        return value  # a class, or an instance (a template: each run gets a fresh one)
    raise TypeError(
        f"stage {label!r}: dispatcher must be DemandDispatcher, BroadcastDispatcher, "
        f"PartitionDispatcher(partitions=...) or another Dispatcher, got {value!r}"
    )


def _executor(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    check_executor(label, value, given.get("concurrency", 1))
    return value


def _concurrency(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    check_executor(label, None, value)
    return value


def _total(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    if value is not None and (not _is_int(value) or value < 0):
        raise ValueError(
            f"stage {label!r}: total must be an int >= 0 (the events it will make) or None, "
            f"got {value!r}"
        )
    return value


def _demand(label: str, value: Any, given: Mapping[str, Any]) -> Any:
    if value not in DEMAND_MODES:
        raise ValueError(
            f"stage {label!r}: demand must be 'forward' or 'accumulate', got {value!r}"
        )
    return value


_ALL = frozenset(KINDS)
_PRODUCING = frozenset({PRODUCER, PRODUCER_CONSUMER})
_HANDLING = frozenset({PRODUCER_CONSUMER, CONSUMER})

#: Every stage option, in the order they are checked.
OPTIONS: tuple[Option, ...] = (
    Option(
        "name",
        _ALL,
        None,
        _name,
        "the stage's name in its pipeline (default: from `Pipeline.add` or the class name)",
        fused=True,
        attribute="_name",
    ),
    Option(
        "restart",
        _ALL,
        "temporary",
        _restart,
        '"temporary" (never restarted), "transient" or "permanent" (restarted after a '
        "failure, `init()` again)",
        fused=True,
        flag="text",
    ),
    Option(
        "max_restarts",
        _ALL,
        3,
        _max_restarts,
        "restarts allowed within `max_seconds`; one more and the stage fails for good",
        fused=True,
        flag="int",
    ),
    Option(
        "max_seconds",
        _ALL,
        5.0,
        _max_seconds,
        "the window of `max_restarts` (OTP's intensity rule)",
        fused=True,
        flag="number",
    ),
    Option(
        "retry",
        _ALL,
        None,
        _retry,
        "a `gs.Retry(...)`: a hook call that raises one of its exceptions is made again, "
        "with the same events, after a backoff",
        fused=False,  # a failing call is made again later, outside the loop
        flag="expression",
    ),
    Option(
        "rate_limit",
        _PRODUCING,
        None,
        _rate_limit,
        "`(n, seconds)`: at most n events leave in any window of that many seconds; the "
        "rest wait, nothing is dropped (a `gs.RateLimit` object: one window shared by the "
        "stages given it; `%%stage --rate-limit N/SECONDS`)",
        fused=False,  # events leave paced
        flag="rate",
    ),
    Option(
        "buffer_size",
        _PRODUCING,
        None,
        _buffer_size,
        "events kept when no consumer asks (None: unbounded); producers 10,000, "
        "producer-consumers unbounded",
        fused=True,  # the loop runs only while the buffer is empty
        flag="expression",
        per_kind={PRODUCER: PRODUCER_BUFFER_SIZE},
    ),
    Option(
        "buffer_keep",
        _PRODUCING,
        "last",
        _buffer_keep,
        '"last" drops the oldest events when the buffer overflows, "first" the newest',
        fused=True,
        flag="text",
    ),
    Option(
        "dispatcher",
        _PRODUCING,
        None,
        _dispatcher,
        "`DemandDispatcher` (the default), `BroadcastDispatcher`, "
        "`PartitionDispatcher(partitions=...)` or another Dispatcher, a class or an instance",
        fused=True,  # the loop looks at the dispatcher itself (a lone DemandDispatcher link)
        flag="expression",
    ),
    Option(
        "executor",
        _HANDLING,
        None,
        _executor,
        "a `concurrent.futures.Executor` or a `dask.distributed.Client`: `handle_events` "
        "runs there (a copy of the stage for a class stage)",
        fused=False,  # work in flight, off the loop
        flag="expression",
    ),
    Option(
        "concurrency",
        _HANDLING,
        1,
        _concurrency,
        "batches in flight at once (on the executor, or as calls of an async "
        "`handle_events`); results are taken in order",
        fused=False,
        flag="int",
    ),
    Option(
        "demand",
        frozenset({PRODUCER}),
        "forward",
        _demand,
        '"forward" or "accumulate" (demand is kept until `stage.demand("forward")`)',
        fused=True,  # an accumulating producer never enters the loop
        flag="text",
        attribute="_demand_mode",
    ),
    Option(
        "total",
        frozenset({PRODUCER}),
        None,
        _total,
        "the events it will make in all, for `Pipeline.progress` (fraction done, ETA); "
        "`from_iterable` takes the `len()` of what it is given",
        fused=True,  # read by the progress only
        flag="int",
        attribute="_total",
    ),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


def options_of(kind: str) -> tuple[Option, ...]:
    """The options a stage of ``kind`` takes, in the order they are checked (another
    kind, the base ``Stage``: those every kind takes)."""
    if kind not in KINDS:
        return tuple(option for option in OPTIONS if option.kinds == _ALL)
    return tuple(option for option in OPTIONS if kind in option.kinds)


def configure(stage: Any, kind: str, given: Mapping[str, Any]) -> None:
    """Check ``given`` against the options of ``kind`` and set them (defaults for the
    rest) on ``stage``: an unknown or bad option raises naming the stage and the option."""
    label = given.get("name") or type(stage).__name__
    taken = options_of(kind)
    unknown = set(given) - {option.name for option in taken}
    if unknown:
        allowed = ", ".join(sorted(option.name for option in taken))
        shown = kind.replace("concurrent_consumer", "consumer")
        raise TypeError(
            f"stage {label!r}: unknown option {sorted(unknown)[0]!r} for a {shown} "
            f"(options: {allowed})"
        )
    for option in taken:
        value = given.get(option.name, option.default_for(kind))
        setattr(stage, option.slot, option.check(label, value, given))


def fusable(stage: Any, kind: str) -> bool:
    """Whether the fused loop may run ``stage``: every option it does not handle at its
    default."""
    for option in options_of(kind):
        if not option.fused and getattr(stage, option.slot) != option.default_for(kind):
            return False
    return True


def flags_of_cell() -> tuple[Option, ...]:
    """The options ``%%stage`` takes as flags."""
    return tuple(option for option in OPTIONS if option.flag is not None)


def option_table() -> str:
    """The options as a Markdown table (docs/concepts.md shows it)."""
    head = "| option | default | " + " | ".join(k.replace("_", "-") for k in KINDS)
    rows = [head + " | fused loop | what it sets |", "|---|---|" + "---|" * (len(KINDS) + 2)]
    for option in OPTIONS:
        defaults = [
            f"{option.default_for(k)!r} ({k.replace('_', '-')})" for k in KINDS if k in option.kinds
        ]
        if len({d.split(" (")[0] for d in defaults}) > 1:
            default = ", ".join(defaults)
        else:
            default = f"`{option.default!r}`"
        cells = " | ".join("x" if k in option.kinds else "" for k in KINDS)
        fused = "runs" if option.fused else "default only"
        rows.append(f"| `{option.name}` | {default} | {cells} | {fused} | {option.doc} |")
    return "\n".join(rows) + "\n"


__all__ = ["BY_NAME", "KINDS", "OPTIONS", "Option", "configure", "fusable", "options_of"]
