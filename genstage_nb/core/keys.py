"""``stable_hash``: a key's hash, the same in every process.

Python salts the hashes of ``str``, ``bytes`` and datetimes per process
(``PYTHONHASHSEED``), so ``hash(key) % N`` sends a key to another partition after a
restart. A run that resumes from a checkpoint (DESIGN.md section 9) must send every key
to the partition that holds its state: the partitions of ``PartitionDispatcher`` (by
default) and of a Flow's ``partition(key=)`` pick by ``stable_hash``.

Numbers keep Python's own hash (it is not salted: ``stable_hash(7) == hash(7)``), so
equal numbers of different types (``1``, ``1.0``, ``True``) still meet; strings and
bytes take their CRC-32, tuples and frozensets combine their items', dates and times
their ISO form (aware ones in UTC), enums their class and member names. Anything else
keeps ``hash()`` (stable when its own ``__hash__`` is). A key's hash is computed once
and remembered (for the last 65,536 keys).

>>> stable_hash("JFK") == stable_hash("JF" + "K") == 3311509919
True
>>> stable_hash(7), stable_hash(("AA", 1)) == stable_hash(("AA", 1.0))
(7, True)
"""

from __future__ import annotations

import enum
import zlib
from datetime import UTC, date, datetime, time
from typing import Any

_MEMO_SIZE = 1 << 16
_memo: dict[Any, int] = {}
_NUMBERS = frozenset((int, float, bool, complex, type(None)))
_MASK = (1 << 61) - 1


def stable_hash(key: Any) -> int:
    """``key``'s hash, the same in every process (see the module's text)."""
    if key.__class__ in _NUMBERS:
        return hash(key)
    found = _memo.get(key)
    if found is None:
        found = _hash_of(key)
        if len(_memo) >= _MEMO_SIZE:
            _memo.clear()
        _memo[key] = found
    return found


def _hash_of(key: Any) -> int:
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if isinstance(key, (bytes, bytearray, memoryview)):
        return zlib.crc32(key)
    if isinstance(key, tuple):
        h = 0x345678
        for item in key:
            h = ((h * 1_000_003) ^ _item(item)) & _MASK
        return h ^ len(key)
    if isinstance(key, frozenset):
        return sum(_item(item) for item in key) & _MASK
    if isinstance(key, enum.Enum):
        return _hash_of(f"{type(key).__qualname__}.{key.name}")
    if isinstance(key, (date, time)):  # (a datetime is a date; a Timestamp a datetime)
        if isinstance(key, datetime) and key.tzinfo is not None:
            key = key.astimezone(UTC)
        return _hash_of(f"{type(key) is date}{key.isoformat()}")
    return hash(key)


def _item(item: Any) -> int:
    return hash(item) if item.__class__ in _NUMBERS else _hash_of(item)


__all__ = ["stable_hash"]
