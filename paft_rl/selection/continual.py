"""Continual-learning metrics over a task sequence, as SAPO reports them.

``matrix[i][j]`` is the accuracy on task ``j`` after training stage ``i`` (stages and tasks in the same
order); ``baseline[j]`` is task ``j``'s accuracy with the model before any stage.

- AP (average performance): mean accuracy over all tasks after the last stage.
- BWT (backward transfer, negative = forgetting): mean over tasks but the last of
  ``matrix[T-1][j] - matrix[j][j]``.
- FWT (forward transfer): mean over tasks but the first of ``matrix[j-1][j] - baseline[j]``, what earlier
  stages did for a task before it was trained.
"""

from __future__ import annotations

from collections.abc import Sequence

from prompt_pool import UserError


def sequence_metrics(matrix: Sequence[Sequence[float]], baseline: Sequence[float]) -> dict[str, float | None]:
    """AP, BWT and FWT of a square accuracy matrix (``None`` where a sequence of one task has no such term)."""
    size = len(matrix)
    if size == 0 or any(len(row) != size for row in matrix) or len(baseline) != size:
        raise UserError(f"need a square T x T accuracy matrix and T baseline accuracies, got {size} rows "
                        f"of lengths {[len(row) for row in matrix]} and {len(baseline)} baselines")
    last = matrix[-1]
    average = sum(last) / size
    if size == 1:
        return {"AP": average, "BWT": None, "FWT": None}
    backward = sum(last[j] - matrix[j][j] for j in range(size - 1)) / (size - 1)
    forward = sum(matrix[j - 1][j] - baseline[j] for j in range(1, size)) / (size - 1)
    return {"AP": average, "BWT": backward, "FWT": forward}
