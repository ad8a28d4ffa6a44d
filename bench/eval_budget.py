"""How well ``paft-rl eval --budget`` estimates a full robustness evaluation, against naive subsampling.

The ground truth is a set of full (template x question) grids computed once by ``paft-rl eval`` and kept in
``bench/grids/`` (``bench/make_grids.py`` made them; each ``.json`` beside a grid holds its command). For every
grid and budget (2, 5, 10, 20 % of the cells) the bench draws the budgeted design many times (a different seed
each time) and compares, on the very same cells:

- **budgeted**: the item-response estimate ``paft-rl eval --budget`` reports (``paft_rl.eval.budget``);
- **naive**: what a user would otherwise do with those cells, each template's mean over the cells it got.

Errors against the full grid: mean absolute error of the per-template accuracies (MAE), Wasserstein-1 distance
between the estimated and true distributions of per-template accuracy (W1; the budgeted side is the estimated
distribution ``results.json`` reports, naive's is its per-template means), error of the worst template's
accuracy and of the std across templates; and how often the 90 % intervals hold the truth (per template, and
for the mean and the worst template; naive per-template intervals are Wilson score intervals).

    python bench/eval_budget.py [--repeats 50] [--grid NAME ...]
    python bench/eval_budget.py --quick      # 2 designs per budget on one grid: checks the path, measures nothing

Prints one table per grid, then the averages over grids, then the budgeted / naive error ratios (last).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from paft_rl.eval.budget import budget_cells, design_cells, estimate_accuracies, naive_accuracies  # noqa: E402

GRIDS = ROOT / "bench" / "grids"
QUICK_GRID = "synth_mc-smollm2"
BUDGETS = (0.02, 0.05, 0.10, 0.20)
Z90 = 1.6448536269514722


def load_grid(path: Path) -> tuple[list[str], np.ndarray]:
    """A grid file -> template ids and a templates x questions array of scores (rows and columns in file order)."""
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    templates = list(dict.fromkeys(r["template"] for r in rows))
    questions = list(dict.fromkeys(r["question"] for r in rows))
    grid = np.full((len(templates), len(questions)), np.nan)
    t_index = {t: i for i, t in enumerate(templates)}
    q_index = {q: i for i, q in enumerate(questions)}
    for r in rows:
        grid[t_index[r["template"]], q_index[r["question"]]] = float(r["score"]) if r["score"] else np.nan
    if np.isnan(grid).any():
        raise SystemExit(f"{path.name}: the bench needs complete grids; {int(np.isnan(grid).sum())} cells are missing")
    return templates, grid


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(a, b))


def wilson(successes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """90 % Wilson score interval of a proportion (the usual interval for a template's observed accuracy)."""
    p = successes / counts
    centre = (p + Z90**2 / (2 * counts)) / (1 + Z90**2 / counts)
    half = Z90 * np.sqrt(p * (1 - p) / counts + Z90**2 / (4 * counts**2)) / (1 + Z90**2 / counts)
    return centre - half, centre + half


def one_draw(grid: np.ndarray, cells: int, seed: int) -> dict[str, float]:
    n_templates, n_questions = grid.shape
    truth = grid.mean(axis=1)
    design = design_cells(n_templates, n_questions, cells, seed)
    observed = {cell: grid[cell] for cell in design}
    estimate = estimate_accuracies(observed, n_templates, n_questions, top_threshold=0.5, seed=seed)
    naive = naive_accuracies(observed, n_templates)
    ours = estimate["per_template"]
    low, high = estimate["per_template_interval"].T
    counts = np.bincount([t for t, _ in design], minlength=n_templates)
    naive_low, naive_high = wilson(naive * counts, counts)
    inside = lambda value, interval: float(interval[0] - 1e-9 <= value <= interval[1] + 1e-9)  # noqa: E731
    return {
        "mae": float(np.abs(ours - truth).mean()), "naive_mae": float(np.abs(naive - truth).mean()),
        "w1": wasserstein(estimate["distribution"], truth), "naive_w1": wasserstein(naive, truth),
        "worst": abs(estimate["min"][0] - truth.min()), "naive_worst": abs(naive.min() - truth.min()),
        "std": abs(estimate["std"][0] - truth.std()), "naive_std": abs(naive.std() - truth.std()),
        "cover": float(((truth >= low - 1e-9) & (truth <= high + 1e-9)).mean()),
        "naive_cover": float(((truth >= naive_low - 1e-9) & (truth <= naive_high + 1e-9)).mean()),
        "cover_mean": inside(truth.mean(), estimate["mean"][1]), "cover_worst": inside(truth.min(), estimate["min"][1]),
    }


def describe(folder: Path, name: str) -> str:
    meta_path = folder / f"{name}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return f"{name}: {meta.get('command', '(no command recorded)')}"


def main() -> None:
    parser = argparse.ArgumentParser(description="budgeted evaluation against naive subsampling")
    parser.add_argument("--repeats", type=int, default=50, help="designs drawn per grid and budget (default: 50)")
    parser.add_argument("--grid", action="append", help="grid names in the grid folder (default: all)")
    parser.add_argument("--dir", default=str(GRIDS), help="grid folder (default: bench/grids)")
    parser.add_argument("--quick", action="store_true", help=f"2 designs per budget on one grid ({QUICK_GRID})")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.grid = 2, args.grid or [QUICK_GRID]
    folder = Path(args.dir)
    names = args.grid or sorted(p.stem for p in folder.glob("*.csv"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{args.repeats} designs per grid and budget")
    started = time.perf_counter()
    summary: dict[float, list[dict]] = {b: [] for b in BUDGETS}
    for name in names:
        templates, grid = load_grid(folder / f"{name}.csv")
        truth = grid.mean(axis=1)
        print(f"\n{describe(folder, name)}")
        print(f"  {grid.shape[0]} templates x {grid.shape[1]} questions; true mean {truth.mean():.3f}, "
              f"std {truth.std():.3f}, worst {truth.min():.3f}, best {truth.max():.3f}")
        print(HEADER)
        for budget in BUDGETS:
            cells = budget_cells(budget, *grid.shape)
            draws = [one_draw(grid, cells, seed) for seed in range(args.repeats)]
            summary[budget].append(average(draws))
            print(format_row(f"{budget:6.0%} {cells:6d}", summary[budget][-1]))
    averages = {budget: average(rows) for budget, rows in summary.items()}
    print(f"\naverage over {len(names)} grids ({time.perf_counter() - started:.0f} s)")
    print(HEADER)
    for budget, row in averages.items():
        print(format_row(f"{budget:6.0%}  (all)", row))
    print("\nerror ratio budgeted / naive (lower is better; target at 10 %: W1 <= 0.03 and ratio <= 0.5)")
    for budget, row in averages.items():
        ratios = ", ".join(f"{key} {row[key] / row['naive_' + key]:.2f}" for key in ("mae", "w1", "worst", "std"))
        print(f"  {budget:4.0%}: {ratios}")


HEADER = ("  budget  cells |    MAE ours/naive |     W1 ours/naive |  worst ours/naive |    std ours/naive "
          "| 90% cover: template ours/naive, mean, worst")


def average(rows: list[dict]) -> dict[str, float]:
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def format_row(label: str, row: dict) -> str:
    return (f"  {label} | {row['mae']:.3f} / {row['naive_mae']:.3f}   | {row['w1']:.3f} / {row['naive_w1']:.3f}   | "
            f"{row['worst']:.3f} / {row['naive_worst']:.3f}   | {row['std']:.3f} / {row['naive_std']:.3f}   | "
            f"{row['cover']:.2f} / {row['naive_cover']:.2f}, {row['cover_mean']:.2f}, {row['cover_worst']:.2f}")


if __name__ == "__main__":
    main()
