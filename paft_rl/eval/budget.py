"""Budgeted evaluation: estimate every template's accuracy from a small share of the (template x question) grid.

Judging a model across many templates costs one evaluation per template. PromptEval (Polo et al., 2024) showed
that the spread of accuracy over templates can be read from a few percent of the grid with an item-response
model, because templates and questions each have a difficulty of their own. Here:

- ``design_cells`` picks the cells: a seeded, balanced sequence (every template before any template twice, and
  questions spread as evenly), whose first ``n`` cells are the design for budget ``n``. A larger budget or a
  further ``--target_error`` round only adds cells, so a resumed or extended run reuses every cell generated.
- ``fit_rasch`` fits P(correct | template, question) = sigmoid(b + a_template + d_question) with scikit-learn's
  logistic regression. Gaussian priors on the effects (the one-hot columns are scaled by the prior's standard
  deviation, so one L2 penalty gives each group its own prior) shrink a template seen on few cells towards the
  others. The two prior scales are not guessed: the model is fitted under every pair from a small grid and
  each fit is weighted by its Laplace approximation of the marginal likelihood.
- ``estimate_accuracies`` draws from the Laplace posteriors of those fits (in proportion to their weights) and,
  for every draw, fills each unobserved cell with a 0/1 outcome drawn at its modelled probability. A template's
  accuracy over *all* questions is then its observed cells plus the drawn ones; every summary (those of a full
  run, `metrics.SUMMARY_STATISTICS`, and quantiles) is computed per draw, so its estimate (the mean over draws)
  and its 90 % interval come from the same sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from prompt_pool import UserError

from .metrics import SUMMARY_STATISTICS, summary_statistics

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# candidate standard deviations (logits) of the template and of the question effects: templates of one task
# often differ by a few points only, questions from always right to never right
TEMPLATE_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)
QUESTION_SCALES = (0.5, 1.0, 2.0, 4.0)
INTERVAL = 0.9
DRAWS = 400


def budget_cells(budget: int | float | str, n_templates: int, n_questions: int) -> int:
    """The number of cells a ``--budget`` value asks for: a fraction of the grid (``0.1``, ``10%``) or a count
    (``500``). It must cover every template once and fit in the grid."""
    total = n_templates * n_questions
    text = str(budget).strip()
    try:
        if text.endswith("%"):
            fraction = float(text[:-1]) / 100
            cells = None
        elif isinstance(budget, float) or any(c in text for c in ".eE"):
            fraction = float(text)
            cells = None
        else:
            cells = int(text)
            fraction = None
    except ValueError:
        raise UserError(f"--budget is a fraction of the grid (0.1, 10%) or a number of cells (500), "
                        f"got {budget!r}") from None
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise UserError(f"--budget as a fraction must be in (0, 1], got {budget!r}")
        cells = max(1, round(fraction * total))
    if cells > total:
        raise UserError(f"--budget {budget} asks for {cells} cells but the grid has only {total} "
                        f"({n_templates} templates x {n_questions} questions); give at most {total} or a fraction")
    if cells < n_templates:
        raise UserError(f"--budget {budget} gives {cells} cells, fewer than the {n_templates} templates; every "
                        f"template needs at least one cell: use a budget of at least {n_templates} cells "
                        f"({n_templates / total:.1%} of the grid), or fewer templates")
    return cells


def design_cells(n_templates: int, n_questions: int, cells: int, seed: int) -> list[tuple[int, int]]:
    """The first ``cells`` (template index, question index) pairs of a seeded balanced sequence.

    Cell ``k`` is ``(T[k mod nT], Q[(k + k // L) mod nQ])`` with ``T`` and ``Q`` seeded permutations and ``L`` the
    least common multiple of the two sizes: within each block of ``L`` cells the pairs are distinct, and the
    shift between blocks makes the ``gcd`` blocks partition the grid. So any prefix has every template within
    one cell of every other, the same for questions, no repeated cell, and the whole sequence is the grid.
    """
    rng = np.random.default_rng(seed)
    templates = rng.permutation(n_templates)
    questions = rng.permutation(n_questions)
    block = math.lcm(n_templates, n_questions)
    return [(int(templates[k % n_templates]), int(questions[(k + k // block) % n_questions])) for k in range(cells)]


@dataclass
class RaschFit:
    """A fitted template + question logistic model and its Laplace posterior.

    ``mean`` holds the intercept, the template effects and the question effects (in logits); ``covariance``
    is the inverse Hessian of the negative log posterior at ``mean``.
    """

    mean: np.ndarray
    covariance: np.ndarray
    template_scale: float
    question_scale: float
    n_templates: int
    n_questions: int

    def logits(self, parameters: np.ndarray) -> np.ndarray:
        """``parameters`` (draws x parameters) -> logits (draws x templates x questions)."""
        intercept = parameters[:, :1, None]
        templates = parameters[:, 1:1 + self.n_templates, None]
        questions = parameters[:, None, 1 + self.n_templates:]
        return intercept + templates + questions


def _design_matrix(template_idx: np.ndarray, question_idx: np.ndarray, n_templates: int, n_questions: int,
                   template_scale: float, question_scale: float) -> np.ndarray:
    rows = np.zeros((len(template_idx), n_templates + n_questions))
    rows[np.arange(len(template_idx)), template_idx] = template_scale
    rows[np.arange(len(question_idx)), n_templates + question_idx] = question_scale
    return rows


def _fit_scaled(x: np.ndarray, y: np.ndarray, weight: np.ndarray):
    """MAP fit with an N(0, 1) prior on the scaled coefficients and a flat intercept; returns it and its evidence."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000, tol=1e-8)
    model.fit(x, y, sample_weight=weight)
    w = np.concatenate([model.intercept_, model.coef_[0]])
    xi = np.hstack([np.ones((len(x), 1)), x])
    p = 1.0 / (1.0 + np.exp(-(xi @ w)))
    eps = 1e-12
    log_likelihood = float(np.sum(weight * (y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))))
    penalty = np.eye(len(w))
    penalty[0, 0] = 1e-6  # the intercept is unpenalised; a tiny ridge keeps the Hessian invertible
    hessian = xi.T @ (xi * (weight * p * (1 - p))[:, None]) + penalty
    _, log_det = np.linalg.slogdet(hessian)
    evidence = log_likelihood - 0.5 * float(w[1:] @ w[1:]) - 0.5 * log_det
    return w, hessian, evidence


def fit_rasch(template_idx: Sequence[int], question_idx: Sequence[int], scores: Sequence[float],
              n_templates: int, n_questions: int) -> list[tuple[float, RaschFit]]:
    """Fit sigmoid(b + a_t + d_q) to observed cells under every pair of candidate prior scales; returns each fit
    with its posterior weight (Laplace evidence, normalised), so that uncertainty about the scales is kept.

    A fractional score ``s`` (partial credit) enters as a success of weight ``s`` and a failure of weight
    ``1 - s``. Half a success and half a failure on the intercept alone keep the fit finite when every observed
    cell agrees.
    """
    t = np.asarray(template_idx, dtype=int)
    q = np.asarray(question_idx, dtype=int)
    s = np.asarray(scores, dtype=float)
    # each cell twice (as a success and as a failure, weighted by its score), then the two pseudo-observations
    y = np.concatenate([np.ones(len(s)), np.zeros(len(s)), [1.0, 0.0]])
    weight = np.concatenate([s, 1.0 - s, [0.5, 0.5]])
    keep = weight > 0
    fits, evidences = [], []
    for template_scale in TEMPLATE_SCALES:
        for question_scale in QUESTION_SCALES:
            cells = _design_matrix(np.concatenate([t, t]), np.concatenate([q, q]), n_templates, n_questions,
                                   template_scale, question_scale)
            x = np.vstack([cells, np.zeros((2, cells.shape[1]))])
            w, hessian, evidence = _fit_scaled(x[keep], y[keep], weight[keep])
            # back from scaled coefficients to effects in logits: theta = S w, covariance S H^-1 S
            scale = np.concatenate([[1.0], np.full(n_templates, template_scale), np.full(n_questions, question_scale)])
            covariance = np.linalg.inv(hessian) * scale[:, None] * scale[None, :]
            fits.append(RaschFit(w * scale, (covariance + covariance.T) / 2, template_scale, question_scale,
                                 n_templates, n_questions))
            evidences.append(evidence)
    weights = np.exp(np.array(evidences) - max(evidences))
    return list(zip((weights / weights.sum()).tolist(), fits))


def quantile_name(level: float) -> str:
    return f"q{round(level * 100):02d}"


def estimate_accuracies(observed: Mapping[tuple[int, int], float], n_templates: int, n_questions: int,
                        top_threshold: float, seed: int, draws: int = DRAWS) -> dict:
    """Estimate per-template accuracy over all questions, and the summaries, from the observed cells.

    Returns:
        `dict`: ``per_template`` (an array of estimates), ``per_template_interval`` (templates x 2), and for each
        summary name (``mean``, ``std``, ``min``, ``max``, ``spread``, ``top``, ``q05`` ... ``q95``) a pair
        ``(estimate, (low, high))``; ``distribution`` (the sorted template accuracies, estimated rank by rank);
        ``prior_scales`` (the chosen standard deviations of the effects).
    """
    keys = list(observed)
    scores = np.array([observed[k] for k in keys], dtype=float)
    t = np.array([k[0] for k in keys], dtype=int)
    q = np.array([k[1] for k in keys], dtype=int)
    fits = fit_rasch(t, q, scores, n_templates, n_questions)
    known = np.zeros((n_templates, n_questions), dtype=bool)
    known[t, q] = True
    observed_sum = np.bincount(t, weights=scores, minlength=n_templates)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(draws, [weight for weight, _ in fits])
    accuracies = np.concatenate([_draw_accuracies(fit, count, known, observed_sum, rng)
                                 for (_, fit), count in zip(fits, counts) if count])
    alpha = (1 - INTERVAL) / 2
    result = {
        "per_template": accuracies.mean(axis=0),
        "per_template_interval": np.quantile(accuracies, [alpha, 1 - alpha], axis=0).T,
        # The spread of accuracies over templates: each draw sorted, then averaged rank by rank. Per-template
        # estimates are shrunk towards each other, so their own spread understates the true one.
        "distribution": np.sort(accuracies, axis=1).mean(axis=0),
        "prior_scales": {name: float(sum(w * getattr(fit, f"{name}_scale") for w, fit in fits))
                         for name in ("template", "question")},  # posterior means
    }
    statistics = summary_statistics(accuracies, top_threshold)
    for level, values in zip(QUANTILES, np.quantile(accuracies, QUANTILES, axis=1)):
        statistics[quantile_name(level)] = values
    for name, values in statistics.items():
        low, high = np.quantile(values, [alpha, 1 - alpha])
        result[name] = (float(values.mean()), (float(low), float(high)))
    return result


def _draw_accuracies(fit: RaschFit, count: int, known: np.ndarray, observed_sum: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """``count`` plausible full grids under one fit, as per-template accuracies (draws x templates)."""
    n_questions = known.shape[1]
    parameters = rng.multivariate_normal(fit.mean, fit.covariance, size=count, method="cholesky")
    accuracies = np.empty((count, known.shape[0]))
    for start in range(0, count, 50):  # chunks keep draws x templates x questions small on large grids
        chunk = parameters[start:start + 50]
        p = 1.0 / (1.0 + np.exp(-fit.logits(chunk)))
        filled = (rng.random(p.shape) < p) & ~known
        accuracies[start:start + len(chunk)] = (observed_sum + filled.sum(axis=2)) / n_questions
    # Centre the draws on the plug-in estimate. The Laplace posterior is symmetric in logits where the true one
    # is skewed (a question nobody answered is very hard, not maybe easy), which pulls drawn probabilities
    # towards 1/2; the plug-in fit is calibrated on the observed cells (its unpenalised intercept makes the
    # fitted and observed totals equal), so it sets the centre and the draws only the spread.
    plug_in = 1.0 / (1.0 + np.exp(-fit.logits(fit.mean[None, :])[0]))
    point = (observed_sum + np.where(known, 0.0, plug_in).sum(axis=1)) / n_questions
    return np.clip(accuracies + (point - accuracies.mean(axis=0)), 0.0, 1.0)


def naive_accuracies(observed: Mapping[tuple[int, int], float], n_templates: int) -> np.ndarray:
    """The baseline a user would otherwise compute: each template's mean over the cells it was scored on."""
    sums = np.zeros(n_templates)
    counts = np.zeros(n_templates)
    for (template, _), score in observed.items():
        sums[template] += score
        counts[template] += 1
    return np.divide(sums, counts, out=np.full(n_templates, np.nan), where=counts > 0)


@dataclass
class BudgetPlan:
    """The cells of a budgeted run, in design order: ``cells[:first_cells]`` are generated first, and each
    ``--target_error`` round adds the next ``first_cells``.

    Args:
        template_ids (`list[str]`): templates in pool order.
        row_ids (`list[str]`): questions in data order.
        cells (`list[Cell]`): every cell of the grid, in design order.
        first_cells (`int`): the budget.
    """

    template_ids: list[str]
    row_ids: list[str]
    cells: list
    first_cells: int

    def narrow_enough(self, metrics: dict, target_error: float) -> bool:
        intervals = metrics["estimated"]["intervals"]
        return all(intervals[name][1] - intervals[name][0] < target_error for name in ("mean", "min"))


def plan_budget(cells: list, template_ids: list[str], budget, seed: int) -> BudgetPlan:
    """Order the grid's cells by the balanced design; ``budget`` ``None`` (a bare ``--target_error``) starts from
    the fewest cells that show every template and every question once."""
    row_ids = list(dict.fromkeys(cell.row for cell in cells))
    n_templates, n_questions = len(template_ids), len(row_ids)
    if budget is None:
        first = max(n_templates, n_questions)
    else:
        first = budget_cells(budget, n_templates, n_questions)
    by_key = {(cell.template, cell.row): cell for cell in cells}
    order = design_cells(n_templates, n_questions, n_templates * n_questions, seed)
    return BudgetPlan(template_ids, row_ids, [by_key[(template_ids[t], row_ids[q])] for t, q in order], first)


def estimated_metrics(plan: BudgetPlan, records: list[dict], top_threshold: float, seed: int) -> dict:
    """Metrics of one model from the scored cells of a budgeted run, in the layout of a full run's metrics
    (``per_template``, ``mean``, ...; estimates over all questions) plus ``quantiles`` and an ``estimated`` block
    that names the estimated fields and holds their 90 % intervals."""
    template_index = {t: i for i, t in enumerate(plan.template_ids)}
    row_index = {r: i for i, r in enumerate(plan.row_ids)}
    observed = {(template_index[r["template"]], row_index[r["row_id"]]): r["score"]
                for r in records if r["score"] is not None}
    n_templates, n_questions = len(plan.template_ids), len(plan.row_ids)
    estimate = estimate_accuracies(observed, n_templates, n_questions, top_threshold, seed)
    naive = naive_accuracies(observed, n_templates)
    counts = np.bincount([t for t, _ in observed], minlength=n_templates)
    quantile_names = [quantile_name(level) for level in QUANTILES]
    summary_names = list(SUMMARY_STATISTICS)  # the statistics a full run reports, estimated
    metrics = {name: estimate[name][0] for name in summary_names}
    metrics.update({"n_templates": n_templates, "pss": None})  # PSS needs every template on the same questions
    metrics["per_template"] = {t: float(v) for t, v in zip(plan.template_ids, estimate["per_template"])}
    metrics["quantiles"] = {name: estimate[name][0] for name in quantile_names}
    intervals = {name: list(estimate[name][1]) for name in (*summary_names, *quantile_names)}
    intervals["per_template"] = {t: [float(lo), float(hi)]
                                 for t, (lo, hi) in zip(plan.template_ids, estimate["per_template_interval"])}
    metrics["estimated"] = {
        "method": "Rasch (template + question logistic model, scikit-learn), Laplace posterior with drawn outcomes",
        "fields": [*summary_names, "per_template", "quantiles"],
        "cells": len(records),
        "scored_cells": len(observed),
        "grid_cells": n_templates * n_questions,
        "interval": INTERVAL,
        "intervals": intervals,
        "observed_per_template": {t: (None if math.isnan(v) else float(v)) for t, v in zip(plan.template_ids, naive)},
        "cells_per_template": {t: int(c) for t, c in zip(plan.template_ids, counts)},
        "distribution": [float(v) for v in estimate["distribution"]],
        "prior_scales": estimate["prior_scales"],
    }
    return metrics


def format_estimates(results: dict) -> list[str]:
    """Terminal lines for budgeted models: how many cells the estimates rest on, and the main intervals."""
    lines = []
    for spec, metrics in results["models"].items():
        estimated = metrics.get("estimated")
        if estimated is None:
            continue
        intervals = estimated["intervals"]
        parts = [f"{name} {metrics[name]:.3f} [{intervals[name][0]:.3f}, {intervals[name][1]:.3f}]"
                 for name in ("mean", "std", "min", "top")]
        rounds = f" in {estimated['rounds']} rounds" if estimated.get("rounds", 1) > 1 else ""
        lines.append(f"{spec}: estimated from {estimated['cells']} of {estimated['grid_cells']} cells{rounds}; "
                     f"{round(estimated['interval'] * 100)} % intervals: {', '.join(parts)}")
    return lines
