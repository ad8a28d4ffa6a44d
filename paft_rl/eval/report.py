"""Writing an evaluation's outputs (all atomically) and the terminal table."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from prompt_pool import atomic_write_text

from .plots import plot_distribution, plot_estimates, plot_heatmap

TABLE_COLUMNS = ("mean", "std", "min", "max", "spread", "top", "pss", "mean_tokens", "seconds")


def write_outputs(results: dict, records: list[dict], out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``per_template.csv``, ``generations.jsonl`` and the two PNG plots into ``out_dir``."""
    out = Path(out_dir)
    paths = {
        "results": atomic_write_text(out / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n"),
        "per_template": atomic_write_text(out / "per_template.csv", per_template_csv(results)),
        "generations": atomic_write_text(
            out / "generations.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)),
        "distribution": plot_distribution(results, out / "accuracy_distribution.png"),
        "heatmap": plot_heatmap(results, out / "template_heatmap.png"),
    }
    if any("estimated" in metrics for metrics in results["models"].values()):  # a --budget run
        paths["estimates"] = plot_estimates(results, out / "estimated_accuracy.png")
    mode = 0o666 & ~_umask()  # temporary files are created private; results are ordinary files
    for path in paths.values():
        path.chmod(mode)
    return paths


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def per_template_csv(results: dict) -> str:
    """Long format: one row per (model, template) with its accuracy."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "template", "accuracy"])
    for spec, metrics in results["models"].items():
        for template in results["settings"]["template_ids"]:
            accuracy = metrics["per_template"].get(template)
            writer.writerow([spec, template, "" if accuracy is None else f"{accuracy:.6f}"])
    return buffer.getvalue()


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_table(results: dict) -> str:
    """A plain-text table: one line per model with the summary metrics."""
    header = ["model", *TABLE_COLUMNS]
    rows = [[spec, *(_cell(metrics.get(c)) for c in TABLE_COLUMNS)] for spec, metrics in results["models"].items()]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(widths[i]) if i == 0 else str(v).rjust(widths[i]) for i, v in enumerate(row))
             for row in [header, *rows]]
    settings = results["settings"]
    title = (f"{settings['task']}: {len(settings['template_ids'])} templates x {settings['n_questions']} questions, "
             f"Top = share of templates with accuracy >= {settings['top_threshold']:g}")
    return "\n".join([title, *lines])
