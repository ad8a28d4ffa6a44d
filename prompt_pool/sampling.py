"""Deterministic template draws.

The template of a training example is a pure function of ``(seed, row id, position)``: no global RNG,
no per-process state. Every rank of a distributed run, and a run resumed from a checkpoint, computes the
same draw from the same three numbers, which is what keeps a GRPO group on one prompt everywhere.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence

_SCALE = float(2**64)


def unit_hash(*parts: object) -> float:
    """Map ``parts`` to a float in ``[0, 1)`` with a keyed hash (stable across processes and Python runs)."""
    key = "\x1f".join(str(part) for part in parts).encode()
    digest = hashlib.blake2b(key, digest_size=8, person=b"paft-rl-draw").digest()
    return int.from_bytes(digest, "big") / _SCALE


def draw_index(seed: int, row_id: object, position: int, n: int, weights: Sequence[float] | None = None) -> int:
    """Pick an index in ``range(n)`` for one example.

    Args:
        seed (`int`): the run's seed.
        row_id (`object`): a stable id of the dataset row (its index in the loaded split).
        position (`int`): where in training the draw happens (epoch, step, or block of K steps).
        n (`int`): number of candidates.
        weights (`Sequence[float]`, *optional*): non-negative weights; uniform when omitted (PAFT's draw).
    """
    if n <= 0:
        raise ValueError("cannot draw from an empty set of templates")
    u = unit_hash(seed, row_id, position)
    if weights is None:
        return min(int(u * n), n - 1)
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weights for {n} templates")
    cumulative = []
    total = 0.0
    for weight in weights:
        if not (weight >= 0 and math.isfinite(weight)):
            raise ValueError(f"template weights must be finite and non-negative, got {weight!r}")
        total += weight
        cumulative.append(total)
    if total <= 0:
        raise ValueError("template weights sum to zero")
    return min(bisect.bisect_right(cumulative, u * total), n - 1)
