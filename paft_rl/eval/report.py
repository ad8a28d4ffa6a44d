"""Writing an evaluation's outputs (all atomically) and the terminal table."""

from __future__ import annotations

import csv
import io
import json
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
    return paths


def per_template_csv(results: dict) -> str:
    """Long format: one row per (model, template) with its accuracy, parse-failure rate and, for multiple
    choice, balanced accuracy and the shares of options chosen and gold (``A:0.95 B:0.05``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "template", "accuracy", "estimated", "interval_low", "interval_high",
                     "parse_failure_rate", "balanced_accuracy", "chosen", "gold", "model_path"])
    for spec, metrics in results["models"].items():
        choices = metrics.get("choices_per_template", {})
        # A --budget run estimates each template's accuracy over all questions, with a 90 % interval.
        intervals = metrics.get("estimated", {}).get("intervals", {}).get("per_template", {})
        for template in results["settings"]["template_ids"]:
            summary = choices.get(template, {})
            low, high = intervals.get(template, (None, None))
            writer.writerow([
                metrics.get("label", spec), template, _number(metrics["per_template"].get(template)),
                "estimated" in metrics, _number(low), _number(high),
                _number(metrics.get("parse_failures_per_template", {}).get(template)),
                _number(summary.get("balanced_accuracy")), _shares(summary.get("chosen")), _shares(summary.get("gold")),
                spec,
            ])
    return buffer.getvalue()


def _number(value) -> str:
    return "" if value is None else f"{value:.6f}"


def _shares(shares: dict | None) -> str:
    return " ".join(f"{k}:{v:.3f}" for k, v in shares.items()) if shares else ""


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _columns(results: dict) -> list[str]:
    columns = list(TABLE_COLUMNS)
    columns.insert(columns.index("mean_tokens"), "unparsed")
    if any("balanced_accuracy" in m for m in results["models"].values()):
        columns.insert(columns.index("unparsed") + 1, "bal_acc")
    return columns


def _value(metrics: dict, column: str):
    return metrics.get({"unparsed": "parse_failure_rate", "bal_acc": "balanced_accuracy"}.get(column, column))


def format_table(results: dict) -> str:
    """A plain-text table, one line per model with the summary metrics, then what needs a reader's attention:
    answers the reward could not read, and answers that lean on one option far more than the golds do."""
    columns = _columns(results)
    header = ["model", *columns]
    rows = [[metrics.get("label", spec), *(_cell(_value(metrics, c)) for c in columns)]
            for spec, metrics in results["models"].items()]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(widths[i]) if i == 0 else str(v).rjust(widths[i]) for i, v in enumerate(row))
             for row in [header, *rows]]
    settings = results["settings"]
    title = (f"{settings['task']}: {len(settings['template_ids'])} templates x {settings['n_questions']} questions, "
             f"Top = share of templates with accuracy >= {settings['top_threshold']:g}")
    if settings.get("chance_accuracy") is not None:
        title += f", chance {settings['chance_accuracy']:.2f}"
    if settings.get("scoring") == "loglik":
        title += ", scored by option log-likelihood"
    notes = [note for spec, metrics in results["models"].items()
             for note in _notes(metrics.get("label", spec), metrics)]
    return "\n".join([title, *lines, *_intervals(results), *notes])


def _intervals(results: dict) -> list[str]:
    """For a budgeted run (estimated from part of the grid): each model's intervals of the mean and the worst."""
    lines = []
    for spec, metrics in results["models"].items():
        estimated = metrics.get("estimated")
        if estimated:
            shown = ", ".join(f"{name} [{low:.3f}, {high:.3f}]" for name, (low, high) in
                              ((n, estimated["intervals"][n]) for n in ("mean", "min")))
            lines.append(f"{metrics.get('label', spec)}: {estimated.get('interval', 0.9):.0%} intervals {shown}")
    return lines


def _notes(label: str, metrics: dict) -> list[str]:
    notes = []
    rate = metrics.get("parse_failure_rate")
    if rate:
        per_template = metrics.get("parse_failures_per_template", {})
        worst = sorted((t for t, r in per_template.items() if r), key=lambda t: -per_template[t])[:3]
        notes.append(f"unparsed: {label}: {rate:.0%} of answers could not be read "
                     f"(worst: {', '.join(f'{t} {per_template[t]:.0%}' for t in worst)})")
    leaning = metrics.get("biased_templates", [])
    if leaning:
        per_template = metrics["choices_per_template"]
        biases = sorted(((t, per_template[t]["bias"]) for t in leaning), key=lambda tb: tb[1]["gold"] - tb[1]["chosen"])
        shown = ", ".join(f"{t}: {b['option']} {b['chosen']:.0%} vs {b['gold']:.0%} of golds" for t, b in biases[:3])
        pooled = metrics["choices"]["bias"]
        overall = (f"; overall {pooled['option']} {pooled['chosen']:.0%} vs {pooled['gold']:.0%} of golds"
                   if pooled else "")
        notes.append(f"warning: {label} answers one option far more often than the golds under {len(leaning)} of "
                     f"{len(per_template)} templates ({shown}{overall}); there its accuracy partly measures the "
                     "golds' balance: see bal_acc")
    return notes
