"""Two pictures of robustness: how accuracy is spread over templates for each model (every template a dot,
over a violin when there are enough distinct values), and which templates each model handles (a
template-by-model heatmap)."""

from __future__ import annotations

from pathlib import Path

from prompt_pool.io import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def short_names(specs: list[str]) -> list[str]:
    """Readable, unique model names for axes: the last path part, the full spec where those clash."""
    names = [Path(spec).name or spec for spec in specs]
    return [name if names.count(name) == 1 else spec for name, spec in zip(names, specs)]


def _save(figure, path: Path) -> Path:
    """Save through a temporary file and a rename, so a crash never leaves a torn PNG."""
    return atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, bbox_inches="tight"), suffix=".png")


VIOLIN_MIN_DISTINCT = 8  # fewer distinct accuracies than this: a smoothed violin would invent a shape


def model_names(results: dict) -> list[str]:
    """The models' short labels (``--label`` or derived), or `short_names` for results without them."""
    specs = list(results["models"])
    labels = [results["models"][s].get("label") for s in specs]
    return labels if all(labels) else short_names(specs)


def _jitter(count: int, position: float, width: float = 0.12) -> list[float]:
    """Spread ``count`` dots evenly (in a shuffled order, so equal values do not stack) around ``position``."""
    import random

    offsets = [width * (2 * (i + 0.5) / count - 1) for i in range(count)] if count > 1 else [0.0]
    random.Random(count).shuffle(offsets)  # same picture on every run
    return [position + o for o in offsets]


def plot_distribution(results: dict, path: Path) -> Path:
    """Save `distribution_figure` as a PNG."""
    plt = _pyplot()
    figure = distribution_figure(results)
    try:
        return _save(figure, path)
    finally:
        plt.close(figure)


def distribution_figure(results: dict):
    """Per-model accuracy over templates: one jittered dot per template, a violin where the accuracies take
    enough distinct values to have a shape, the mean marked, and the Top threshold and chance level drawn."""
    plt = _pyplot()
    specs = list(results["models"])
    settings = results["settings"]
    values = [[v for v in results["models"][s]["per_template"].values() if v is not None] for s in specs]
    figure, axis = plt.subplots(figsize=(max(4.5, 1.6 * len(specs) + 2.5), 4.2))
    positions = list(range(1, len(specs) + 1))
    drawable = [(p, v) for p, v in zip(positions, values) if len(set(v)) >= VIOLIN_MIN_DISTINCT]
    if drawable:
        parts = axis.violinplot([v for _, v in drawable], positions=[p for p, _ in drawable], showextrema=False,
                                widths=0.8)
        for body in parts["bodies"]:
            body.set_alpha(0.3)
    for index, (position, accuracies) in enumerate(zip(positions, values)):
        # clip_on=False: a template at exactly 0 or 1 is drawn whole, not cut in half by the axes.
        axis.scatter(_jitter(len(accuracies), position), accuracies, s=16, color="black", alpha=0.75, zorder=3,
                     clip_on=False, label="one template" if index == 0 else None)
        if accuracies:
            axis.hlines(sum(accuracies) / len(accuracies), position - 0.3, position + 0.3, color="crimson",
                        linewidth=2, zorder=4, label="mean over templates" if index == 0 else None)
    threshold = settings.get("top_threshold")
    if threshold is not None:
        axis.axhline(threshold, color="gray", linestyle="--", linewidth=0.8, label=f"Top threshold {threshold:g}")
    chance = settings.get("chance_accuracy")
    if chance is not None:
        axis.axhline(chance, color="tab:blue", linestyle=":", linewidth=1.0, label=f"chance {chance:.2f}")
    draw_estimate_intervals(axis, results, specs, positions)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axis.set_xticks(positions, model_names(results), rotation=15)
    axis.set_xlim(0.4, len(specs) + 0.6)
    axis.set_ylim(-0.05, 1.05)
    axis.set_ylabel("accuracy per template")
    scoring = " (option log-likelihood)" if settings.get("scoring") == "loglik" else ""
    axis.set_title(f"{settings['task']}: accuracy over {len(settings['template_ids'])} templates "
                   f"x {settings['n_questions']} questions{scoring}", fontsize=10)
    return figure


def plot_heatmap(results: dict, path: Path) -> Path:
    """Template-by-model accuracy heatmap with the value written in each cell."""
    plt = _pyplot()
    specs = list(results["models"])
    template_ids = results["settings"]["template_ids"]
    matrix = [[results["models"][s]["per_template"].get(t) for s in specs] for t in template_ids]
    numeric = [[float("nan") if v is None else v for v in row] for row in matrix]
    figure, axis = plt.subplots(figsize=(max(3.5, 1.3 * len(specs) + 2.5), max(3.0, 0.32 * len(template_ids) + 1.5)))
    image = axis.imshow(numeric, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value is not None:
                axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                          color="white" if value < 0.5 else "black")
    axis.set_xticks(range(len(specs)), model_names(results), rotation=15)
    axis.set_yticks(range(len(template_ids)), template_ids, fontsize=7)
    figure.colorbar(image, ax=axis, label="accuracy")
    axis.set_title("accuracy per template and model")
    try:
        return _save(figure, path)
    finally:
        plt.close(figure)


def draw_estimate_intervals(axis, results: dict, specs: list[str], positions: list[int]) -> None:
    """On the distribution plot of a budgeted run: each model's 90 % intervals of the mean and of the worst
    template, as error bars beside its dots (full runs have none and are left as they are)."""
    labelled = False
    for position, spec in zip(positions, specs):
        metrics = results["models"][spec]
        estimated = metrics.get("estimated")
        if estimated is None:
            continue
        for name, color, offset in (("mean", "crimson", 0.38), ("min", "navy", 0.44)):
            low, high = estimated["intervals"][name]
            value = metrics[name]
            axis.errorbar([position + offset], [value], yerr=[[max(0.0, value - low)], [max(0.0, high - value)]],
                          fmt="o", markersize=3, color=color, capsize=3, zorder=5,
                          label=None if labelled else f"{name if name == 'mean' else 'worst'} (90 % interval)")
        labelled = True


def plot_estimates(results: dict, path: Path) -> Path:
    """Budgeted runs: every template's estimated accuracy with its 90 % interval, one panel per model,
    templates sorted by estimate, the cells the estimate rests on in the title."""
    plt = _pyplot()
    specs = [s for s in results["models"] if "estimated" in results["models"][s]]
    template_ids = results["settings"]["template_ids"]
    figure, axes = plt.subplots(len(specs), 1, figsize=(max(5.0, 0.18 * len(template_ids) + 2), 3.2 * len(specs)),
                                squeeze=False)
    names = dict(zip(results["models"], model_names(results)))
    for axis, spec in zip(axes[:, 0], specs):
        metrics = results["models"][spec]
        estimated = metrics["estimated"]
        order = sorted(template_ids, key=lambda t: metrics["per_template"][t])
        values = [metrics["per_template"][t] for t in order]
        # a posterior mean can sit just beside a skewed equal-tailed interval: its bar then starts at the dot
        lows = [max(0.0, v - estimated["intervals"]["per_template"][t][0]) for t, v in zip(order, values)]
        highs = [max(0.0, estimated["intervals"]["per_template"][t][1] - v) for t, v in zip(order, values)]
        axis.errorbar(range(len(order)), values, yerr=[lows, highs], fmt="o", markersize=3, capsize=2, color="black",
                      ecolor="gray", label="estimate, 90 % interval")
        observed = [estimated["observed_per_template"][t] for t in order]
        axis.scatter([i for i, v in enumerate(observed) if v is not None], [v for v in observed if v is not None],
                     s=10, marker="x", color="darkorange", zorder=3, label="mean of its generated cells")
        axis.axhline(metrics["mean"], color="crimson", linewidth=0.8, label=f"mean {metrics['mean']:.3f}")
        axis.set_xticks(range(len(order)), order, rotation=90, fontsize=6)
        axis.set_ylim(-0.02, 1.02)
        axis.set_ylabel("accuracy")
        axis.set_title(f"{names[spec]}: estimated from {estimated['cells']} of {estimated['grid_cells']} cells",
                       fontsize=9)
        axis.legend(loc="upper left", fontsize=7)
    try:
        return _save(figure, path)
    finally:
        plt.close(figure)
