"""Budgeted evaluation (`paft-rl eval --budget`): the design, the estimator on synthetic grids whose truth is
known, and budgeted runs of a tiny model (budget honoured, coverage, resume, --target-error rounds)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from paft_rl import cli
from paft_rl.eval import EvalSettings, evaluate
from paft_rl.eval import scoring as eval_scoring
from paft_rl.eval.budget import budget_cells, design_cells, estimate_accuracies, naive_accuracies
from prompt_pool import UserError


def synthetic_grid(n_templates: int, n_questions: int, seed: int, template_sd=0.8, question_sd=1.5) -> np.ndarray:
    """0/1 outcomes drawn from a Rasch model with a template x question interaction the fit does not have."""
    rng = np.random.default_rng(seed)
    logits = (0.3 + rng.normal(0, template_sd, (n_templates, 1)) + rng.normal(0, question_sd, (1, n_questions))
              + rng.normal(0, 0.4, (n_templates, n_questions)))
    return (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(float)


# ------------------------------------------------------------------------------------------------- design
@pytest.mark.parametrize("n_templates,n_questions", [(7, 10), (12, 8), (6, 9), (5, 5)])
def test_design_is_balanced_without_repeats_and_grows_by_prefix(n_templates, n_questions):
    total = n_templates * n_questions
    full = design_cells(n_templates, n_questions, total, seed=3)
    assert sorted(full) == [(t, q) for t in range(n_templates) for q in range(n_questions)]  # the whole grid, once
    for cells in range(n_templates, total + 1):
        prefix = full[:cells]
        template_counts = Counter(t for t, _ in prefix)
        question_counts = Counter(q for _, q in prefix)
        assert len(template_counts) == n_templates  # every template appears
        assert max(template_counts.values()) - min(template_counts.values()) <= 1
        if cells >= n_questions:
            assert len(question_counts) == n_questions  # and every question, once the budget allows
        assert max(question_counts.values()) - min(question_counts.values()) <= 1
    assert design_cells(n_templates, n_questions, total // 2, seed=3) == full[:total // 2]
    assert design_cells(n_templates, n_questions, total, seed=4) != full


def test_budget_values():
    assert budget_cells("10%", 10, 50) == 50
    assert budget_cells(0.1, 10, 50) == 50
    assert budget_cells("0.25", 10, 50) == 125
    assert budget_cells("1.0", 10, 50) == 500
    assert budget_cells(120, 10, 50) == 120
    for bad, message in [(501, "only 500"), (9, "fewer than the 10 templates"), ("0.01", "fewer than the 10"),
                         ("1.5", r"in \(0, 1\]"), ("lots", "fraction of the grid"), ("0%", r"in \(0, 1\]")]:
        with pytest.raises(UserError, match=message):
            budget_cells(bad, 10, 50)


# ---------------------------------------------------------------------------------------------- estimator
def test_estimator_recovers_known_truth_better_than_naive_with_calibrated_intervals():
    n_templates, n_questions = 30, 60
    errors, naive_errors, covered, checked = [], [], 0, 0
    for seed in range(3):
        grid = synthetic_grid(n_templates, n_questions, seed)
        truth = grid.mean(axis=1)
        cells = design_cells(n_templates, n_questions, budget_cells(0.15, n_templates, n_questions), seed)
        observed = {cell: grid[cell] for cell in cells}
        estimate = estimate_accuracies(observed, n_templates, n_questions, top_threshold=0.7, seed=seed)
        errors.append(np.abs(estimate["per_template"] - truth).mean())
        naive_errors.append(np.abs(naive_accuracies(observed, n_templates) - truth).mean())
        low, high = estimate["per_template_interval"].T
        covered += int(((truth >= low - 1e-9) & (truth <= high + 1e-9)).sum())
        checked += n_templates
        mean_low, mean_high = estimate["mean"][1]
        assert mean_low <= truth.mean() <= mean_high
        assert abs(estimate["mean"][0] - truth.mean()) < 0.05
    assert np.mean(errors) < 0.1
    assert np.mean(errors) < 0.8 * np.mean(naive_errors)
    assert 0.8 <= covered / checked <= 1.0  # 90 % intervals


def test_estimator_on_the_full_grid_is_the_grid():
    grid = synthetic_grid(6, 10, seed=1)
    observed = {(t, q): grid[t, q] for t in range(6) for q in range(10)}
    estimate = estimate_accuracies(observed, 6, 10, top_threshold=0.5, seed=0)
    np.testing.assert_allclose(estimate["per_template"], grid.mean(axis=1))
    np.testing.assert_allclose(estimate["per_template_interval"], np.stack([grid.mean(axis=1)] * 2, axis=1))
    assert estimate["min"][0] == pytest.approx(grid.mean(axis=1).min())
    assert estimate["std"][0] == pytest.approx(grid.mean(axis=1).std())


def test_estimator_when_every_observed_cell_agrees():
    observed = {cell: 0.0 for cell in design_cells(5, 8, 10, seed=0)}
    estimate = estimate_accuracies(observed, 5, 8, top_threshold=0.5, seed=0)
    assert np.all(estimate["per_template"] < 0.3)
    assert estimate["mean"][1][0] == 0.0


# ------------------------------------------------------------------------------------------ budgeted runs
def budget_argv(model, out, *extra):
    # synth_mc's 34 built-in templates x 6 questions: 204 cells
    return ["eval", "--model", str(model), "--task", "synth_mc", "--templates", "all", "--limit", "6",
            "--max-new-tokens", "2", "--out", str(out), "--no-progress", *extra]


def test_budgeted_run_honours_the_budget_covers_the_grid_and_resumes(tmp_path, tiny_model, capsys):
    out = tmp_path / "out"
    assert cli.main(budget_argv(tiny_model, out, "--budget", "0.2")) == 0  # 41 cells
    printed = capsys.readouterr().out
    assert "estimated from 41 of 204 cells" in printed
    results = json.loads((out / "results.json").read_text())
    metrics = results["models"][str(tiny_model)]
    assert metrics["generated_this_run"] == 41
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 41 and len({(r["template"], r["row_id"]) for r in records}) == 41
    assert {r["template"] for r in records} == set(results["settings"]["template_ids"])  # every template
    assert len({r["row_id"] for r in records}) == 6  # every question
    estimated = metrics["estimated"]
    assert (estimated["cells"], estimated["grid_cells"]) == (41, 204)
    assert set(estimated["fields"]) >= {"mean", "std", "min", "top", "per_template", "quantiles"}
    for name in ("mean", "std", "min", "max", "top", "q05", "q50", "q95"):
        low, high = estimated["intervals"][name]
        value = metrics[name] if name in metrics else metrics["quantiles"][name]
        # the estimate is the posterior mean: inside [0, 1], but a skewed posterior (Top of a weak model) can put
        # it beside its equal-tailed interval
        assert 0.0 <= low <= high <= 1.0 and 0.0 <= value <= 1.0
    assert estimated["intervals"]["mean"][0] <= metrics["mean"] <= estimated["intervals"]["mean"][1]
    assert set(estimated["intervals"]["per_template"]) == set(results["settings"]["template_ids"])
    assert set(metrics["per_template"]) == set(results["settings"]["template_ids"])

    # Rerunning resumes: nothing is generated; a larger budget generates only the cells it adds.
    assert cli.main(budget_argv(tiny_model, out, "--budget", "0.2")) == 0
    again = json.loads((out / "results.json").read_text())["models"][str(tiny_model)]
    assert again["generated_this_run"] == 0 and again["per_template"] == metrics["per_template"]
    assert cli.main(budget_argv(tiny_model, out, "--budget", "60")) == 0
    larger = json.loads((out / "results.json").read_text())["models"][str(tiny_model)]
    assert larger["generated_this_run"] == 19 and larger["estimated"]["cells"] == 60

    # A full run in the same folder reuses those cells too, and stays a plain (unestimated) run.
    capsys.readouterr()
    assert cli.main(budget_argv(tiny_model, out)) == 0
    full = json.loads((out / "results.json").read_text())["models"][str(tiny_model)]
    assert full["generated_this_run"] == 204 - 60 and "estimated" not in full
    assert "estimated from" not in capsys.readouterr().out


def with_known_outcomes(monkeypatch, grid: np.ndarray):
    """Score cells by a fixed synthetic grid instead of the tiny model's (random) answers, so that
    intervals have something to narrow around; generation still runs for real."""
    real = eval_scoring.score_cells
    index: dict = {}

    def score_cells(task, cells, generations, *args, **kwargs):
        records = real(task, cells, generations, *args, **kwargs)
        for record in records:
            t = index.setdefault(("t", record["template"]), len([k for k in index if k[0] == "t"]))
            q = index.setdefault(("q", record["row_id"]), len([k for k in index if k[0] == "q"]))
            record["score"] = float(grid[t % grid.shape[0], q % grid.shape[1]])
        return records

    monkeypatch.setattr(eval_scoring, "score_cells", score_cells)


def test_target_error_adds_rounds_until_narrow_or_full(tmp_path, tiny_model, monkeypatch):
    with_known_outcomes(monkeypatch, synthetic_grid(34, 6, seed=2))
    common = dict(task="synth_mc", models=[str(tiny_model)], templates="all", limit=6, max_new_tokens=2, progress=False)
    from paft_rl.eval import backends

    loads = []
    original_init = backends.HFBackend.__init__

    def counting_init(self, *args, **kwargs):
        loads.append(args[0])
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(backends.HFBackend, "__init__", counting_init)
    results, _ = evaluate(EvalSettings(out=str(tmp_path / "a"), budget=34, target_error=0.25, **common))
    metrics = results["models"][str(tiny_model)]
    assert len(loads) == 1  # every round generates with the weights loaded for the first
    estimated = metrics["estimated"]
    widths = {name: estimated["intervals"][name][1] - estimated["intervals"][name][0] for name in ("mean", "min")}
    assert estimated["rounds"] > 1 and estimated["cells"] == 34 * estimated["rounds"]
    assert max(widths.values()) < 0.25
    # one round fewer was not narrow enough (same seed, same cells, same draws)
    fewer, _ = evaluate(EvalSettings(out=str(tmp_path / "a"), budget=estimated["cells"] - 34, **common))
    intervals = fewer["models"][str(tiny_model)]["estimated"]["intervals"]
    assert max(intervals[name][1] - intervals[name][0] for name in ("mean", "min")) >= 0.25
    assert fewer["models"][str(tiny_model)]["generated_this_run"] == 0
    # an unreachable target stops when the grid is full
    full, _ = evaluate(EvalSettings(out=str(tmp_path / "a"), budget=100, target_error=1e-6, **common))
    assert full["models"][str(tiny_model)]["estimated"]["cells"] == 204


@pytest.mark.parametrize("extra,expected", [
    (["--budget", "10"], "fewer than the 34 templates"),
    (["--budget", "300"], "grid has only 204"),
    (["--budget", "half"], "--budget is a fraction"),
    (["--target-error", "2"], "target_error is an interval width"),
])
def test_bad_budget_is_one_line(tmp_path, tiny_model, capsys, extra, expected):
    code = cli.main(budget_argv(tiny_model, tmp_path / "out", *extra))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "out" / ".resume").exists()  # rejected before anything was generated


def test_budgeted_csv_says_which_accuracies_are_estimates(tmp_path, tiny_model, capsys):
    import csv
    import io

    out = tmp_path / "out"
    assert cli.main(budget_argv(tiny_model, out, "--budget", "0.2")) == 0
    rows = list(csv.DictReader(io.StringIO((out / "per_template.csv").read_text())))
    assert rows and all(row["estimated"] == "True" for row in rows)
    assert all(0.0 <= float(row["interval_low"]) <= float(row["interval_high"]) <= 1.0 for row in rows)
