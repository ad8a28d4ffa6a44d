"""Counters of inputs a reward could not read.

A reward never raises on bad input: it scores 0 (or `None` where it does not apply) and bumps a counter here,
so a trainer can log how much of a batch was unreadable instead of discovering it from a flat reward curve.

Keys are reward names (`"math_accuracy"`: completion had no answer that could be read) or
`"<reward>/<what>"` for other events (`"math_accuracy/gold"`: unreadable gold, `"math_accuracy/timeout"`: the
hard per-item timeout fired, `"<reward>/error"`: an unexpected exception that was swallowed).
"""

import threading
from collections import Counter

_LOCK = threading.Lock()
_COUNTS: Counter = Counter()


def count_failure(key: str, n: int = 1) -> None:
    """Add `n` to the counter `key` (thread-safe)."""
    if n <= 0:
        return
    with _LOCK:
        _COUNTS[key] += n


def parse_failures() -> dict[str, int]:
    """Return a snapshot of all counters as a plain `dict` (name -> count)."""
    with _LOCK:
        return dict(_COUNTS)


def reset_parse_failures() -> None:
    """Set every counter back to zero."""
    with _LOCK:
        _COUNTS.clear()
