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
from collections.abc import Callable, Mapping, Sequence

import numpy as np

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


# The statistics of a model's accuracies over templates, each a function of an array of accuracies (any leading
# axes, templates last) and the Top threshold. Full and budgeted evaluations both report exactly these: a full
# run of its measured accuracies, a budgeted one of every posterior draw (`budget.estimate_accuracies`).
SUMMARY_STATISTICS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "mean": lambda accuracies, threshold: accuracies.mean(axis=-1),
    # Population std (ddof=0): the templates evaluated are the whole set being described.
    "std": lambda accuracies, threshold: accuracies.std(axis=-1),
    "min": lambda accuracies, threshold: accuracies.min(axis=-1),
    "max": lambda accuracies, threshold: accuracies.max(axis=-1),
    "spread": lambda accuracies, threshold: accuracies.max(axis=-1) - accuracies.min(axis=-1),
    "top": lambda accuracies, threshold: (accuracies >= threshold - 1e-12).mean(axis=-1),
}


def summary_statistics(accuracies: np.ndarray, top_threshold: float) -> dict[str, np.ndarray]:
    """Every `SUMMARY_STATISTICS` of ``accuracies`` (templates on the last axis), one value per leading index."""
    accuracies = np.asarray(accuracies, dtype=float)
    return {name: statistic(accuracies, top_threshold) for name, statistic in SUMMARY_STATISTICS.items()}


def summarize(per_template: Mapping[str, float | None], top_threshold: float) -> dict:
    """Mean, population standard deviation, min, max, spread (max - min) and Top share of template accuracies.

    Args:
        per_template (`dict[str, float]`): template id -> accuracy (``None`` entries are skipped).
        top_threshold (`float`): a template counts in ``top`` when its accuracy is at least this.

    Returns:
        `dict`: each of `SUMMARY_STATISTICS` (``top`` is a share in [0, 1]) and ``n_templates``; the statistics
        are ``None`` when no template has an accuracy.
    """
    values = [v for v in per_template.values() if v is not None]
    if not values:
        return {**dict.fromkeys(SUMMARY_STATISTICS), "n_templates": 0}
    statistics = {name: float(value) for name, value in summary_statistics(np.array(values), top_threshold).items()}
    return {**statistics, "n_templates": len(values)}


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
