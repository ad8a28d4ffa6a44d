"""An evaluation folder describes everything in it: a new run adds models to it or refuses, never replaces.

``paft-rl eval --out DIR`` may be run again with more models, or after an interruption. Results of the same
evaluation (task, data, templates, questions, generation settings) are kept for every model the new run does not
evaluate, so ``results.json``, the CSV and the plots always cover every model in the folder. A run whose
evaluation differs from the folder's is refused before any model loads, naming what differs. Each model's results
record the fingerprint of its files; a kept model whose files changed since is named (`changed_kept_models`).
"""

from __future__ import annotations

import json
from pathlib import Path

from prompt_pool import UserError, short_value

from ..jsonlog import read_log
from .fingerprint import model_fingerprint

# How fast and how visibly a run went: the same evaluation with other values gives the same results.
SPEED_ONLY = {"batch_size", "max_batch_tokens", "threads", "share_prefix", "progress"}
# How a run was carried out, not what it measured: these may differ between runs that share a folder. A budget
# only says how much of the same grid was generated; each model's metrics record their own cells (`estimated`).
RUN_ONLY = SPEED_ONLY | {"models", "labels", "out", "budget", "target_error"}


def result_settings(settings) -> dict:
    """An `EvalSettings`' fields that decide its results (not `SPEED_ONLY`): what a workflow's eval stage
    fingerprints, so a rerun with more threads or another batch size does not evaluate again."""
    from dataclasses import asdict

    return {key: value for key, value in asdict(settings).items() if key not in SPEED_ONLY}


def previous_results(out_dir: str | Path) -> dict | None:
    """The folder's ``results.json``, or None when there is none (or it is unreadable: it is then rewritten)."""
    path = Path(out_dir) / "results.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def check_same_evaluation(previous: dict, settings: dict, out_dir: str | Path) -> None:
    """Refuse to write into a folder that holds another evaluation's results."""
    before = {k: v for k, v in previous.get("settings", {}).items() if k not in RUN_ONLY}
    now = {k: v for k, v in settings.items() if k not in RUN_ONLY}
    differs = [f"{key}: {short_value(before.get(key))} -> {short_value(now.get(key))}"
               for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    if differs:
        raise UserError(f"{out_dir} holds results of another evaluation ({'; '.join(differs[:4])}"
                        f"{'; ...' if len(differs) > 4 else ''}): choose another --out, or remove its results.json "
                        "to replace them")


def keep_previous_models(previous: dict | None, results: dict, records: list[dict],
                         out_dir: str | Path) -> tuple[dict, list[dict]]:
    """Add the folder's earlier models that this run did not evaluate, with their generation records."""
    if previous is None:
        return results, records
    kept = [spec for spec in previous.get("models", {}) if spec not in results["models"]]
    if not kept:
        return results, records
    old_records = [r for r in read_log(Path(out_dir) / "generations.jsonl") if r.get("model") in kept]
    models = {spec: previous["models"][spec] for spec in kept}
    labels = [previous["models"][spec].get("label", spec) for spec in kept]
    results = {**results, "models": {**models, **results["models"]},
               "settings": {**results["settings"], "models": kept + list(results["settings"]["models"]),
                            "labels": labels + list(results["settings"]["labels"])}}
    return results, old_records + records


def changed_kept_models(previous: dict | None, evaluated: list[str]) -> list[str]:
    """A line for each model whose results the folder keeps (this run does not evaluate it) though its files
    changed since they were computed (`fingerprint.model_fingerprint`); a model no longer there is not named."""
    lines = []
    for spec, metrics in (previous or {}).get("models", {}).items():
        recorded = metrics.get("model_fingerprint")
        if spec in evaluated or recorded is None:
            continue
        try:
            now = model_fingerprint(spec)
        except UserError:  # removed since, or no longer a model: its results stay as they were
            continue
        if now != recorded:
            lines.append(f"note: the results of model {spec} kept in this folder are of an earlier version of it "
                         f"(fingerprint {recorded} -> {now}): pass it in --models to evaluate it again")
    return lines
