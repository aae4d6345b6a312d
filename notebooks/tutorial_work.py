"""CPU-bound work for tutorial 06, in a module so that process-pool workers can import it.

A process pool sends a handler to its workers by pickling it, which stores a function
by its module and name: functions defined in a notebook cell cannot be found there.
Dask pickles them by value, so this module is only needed for process pools.
"""

from __future__ import annotations


def count_primes(numbers: list[int]) -> list[tuple[int, int]]:
    """For each ``n``, the number of primes below ``n`` (trial division: slow on purpose).

    >>> count_primes([10, 20])
    [(10, 4), (20, 8)]
    """
    out = []
    for n in numbers:
        count = sum(1 for k in range(2, n) if all(k % d for d in range(2, int(k**0.5) + 1)))
        out.append((n, count))
    return out
