"""What the benchmark scripts share: the line describing the machine, and the median
rate of a pipeline function checked against its expected result."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def machine() -> str:
    """``x86_64, 2 cores, Python 3.11.7``: printed under every table."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def median_rate(fn: Callable[..., Any], n: int, repeat: int, expected: Any, *args: Any) -> float:
    """Median events per second of ``fn(n, *args)`` over ``repeat`` runs; every run must
    return ``expected``."""
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn(n, *args)
        elapsed = time.perf_counter() - started
        if result != expected:
            raise AssertionError(f"{fn.__name__}{args} computed {result}, expected {expected}")
        rates.append(n / elapsed)
    return statistics.median(rates)
