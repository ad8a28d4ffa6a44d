"""Robustness metrics over a (template x question) grid of scores.

PAFT reports, per model, the distribution of accuracy across held-out templates: mean, standard
deviation, worst and best template, and "Top", the share of templates whose accuracy clears a task
threshold. ProSA adds PromptSensiScore (PSS): for each question, how often two templates disagree on
it, averaged over questions; 0 means every template gets the same questions right, and it stays
meaningful when two templates have equal accuracy on different questions.

Scores are floats in [0, 1] (rewards such as tool-call accuracy may give partial credit) or ``None``
where the reward does not apply (an unreadable gold); ``None`` cells are left out of every average.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

Grid = Mapping[str, Mapping[object, float | None]]  # template id -> question id -> score


def template_accuracy(scores: Mapping[object, float | None]) -> float | None:
    """Mean score of one template over the questions it was scored on; ``None`` when none was."""
    values = [s for s in scores.values() if s is not None]
    return sum(values) / len(values) if values else None


def prompt_sensitivity(grid: Grid) -> float | None:
    """ProSA's PromptSensiScore: the mean over questions of the mean absolute score difference between
    every pair of templates.

    Only questions scored under at least two templates count; for 0/1 scores a question answered right
    by ``k`` of ``n`` templates contributes ``k (n - k) / C(n, 2)``.
    """
    questions: dict[object, list[float]] = {}
    for per_question in grid.values():
        for question, score in per_question.items():
            if score is not None:
                questions.setdefault(question, []).append(float(score))
    per_question_pss = []
    for values in questions.values():
        if len(values) < 2:
            continue
        pairs = list(itertools.combinations(values, 2))
        per_question_pss.append(sum(abs(a - b) for a, b in pairs) / len(pairs))
    return sum(per_question_pss) / len(per_question_pss) if per_question_pss else None


def summarize(per_template: Mapping[str, float | None], top_threshold: float) -> dict:
    """Mean, population standard deviation, min, max, spread (max - min) and Top share of template accuracies.

    Args:
        per_template (`dict[str, float]`): template id -> accuracy (``None`` entries are skipped).
        top_threshold (`float`): a template counts in ``top`` when its accuracy is at least this.

    Returns:
        `dict`: ``mean``, ``std``, ``min``, ``max``, ``spread``, ``top`` (a share in [0, 1]) and
        ``n_templates``; the statistics are ``None`` when no template has an accuracy.
    """
    values = [v for v in per_template.values() if v is not None]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "spread": None, "top": None, "n_templates": 0}
    mean = sum(values) / len(values)
    # Population std (ddof=0): the templates evaluated are the whole set being described.
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {
        "mean": mean,
        "std": std,
        "min": min(values),
        "max": max(values),
        "spread": max(values) - min(values),
        "top": sum(v >= top_threshold - 1e-12 for v in values) / len(values),
        "n_templates": len(values),
    }


def model_metrics(grid: Grid, top_threshold: float, tokens: Sequence[int] = (), seconds: float = 0.0) -> dict:
    """All metrics of one model: `summarize` of its template accuracies, ``pss``, ``mean_tokens``,
    ``seconds`` and ``per_template``."""
    per_template = {template: template_accuracy(scores) for template, scores in grid.items()}
    metrics = summarize(per_template, top_threshold)
    metrics["pss"] = prompt_sensitivity(grid)
    metrics["mean_tokens"] = sum(tokens) / len(tokens) if tokens else None
    metrics["seconds"] = seconds
    metrics["per_template"] = per_template
    return metrics
