"""A pool as an lm-evaluation-harness task group (``paft-rl pool export FILE --task T --format lm-eval``).

Each template becomes one harness task whose ``doc_to_text`` is the template in the harness's Jinja syntax,
and a group aggregates them (the unweighted mean over templates, PAFT's headline number). The questions are
written once, beside the task files, as the task adapter sees them: every template field (``A``, ``options``,
``goal``...), the gold, and for multiple choice the option texts and the gold's index, so a harness run and
``paft-rl eval`` read the same rows and render the same prompts.

Two ways to score, matching ``paft-rl eval --scoring``:

- ``generate``: greedy generation, then a regex filter that reads the answer in the task's format (the option
  letter, the last number, the last ``\\boxed{}``) and an exact match against the gold's answer. The regex is
  stricter than the task reward (which also accepts an option's text, or a number written as words), so a
  model that answers in the expected format scores the same under both.
- ``loglik`` (multiple choice): the harness's ``multiple_choice`` type, the likeliest option text after the
  prompt (its ``acc``), as ``paft-rl eval --scoring loglik`` computes it.

This lives under ``paft_rl`` (not ``prompt_pool``) because it needs the task's fields and answer format.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from prompt_pool import PromptPool, UserError, atomic_write_text

from ..outputs import check_output, refuse_replacing
from ..tasks import LETTERS, Task, load_rows

SENTINEL = "\x00"
DOCS_FILE = "docs.jsonl"


def jinja_template(pool: PromptPool, template, fields: list[str]) -> str:
    """A pool template in the harness's Jinja: ``{field}`` becomes ``{{ field }}`` (aliases resolved), and
    literal text holding Jinja's own markers is wrapped in ``{% raw %}``."""
    marked = pool.render(template, {name: f"{SENTINEL}{name}{SENTINEL}" for name in fields})
    out = []
    for index, part in enumerate(marked.split(SENTINEL)):
        if index % 2:
            out.append("{{ " + part + " }}")
        elif "endraw" in part:  # cannot sit in a raw block: a Jinja string literal instead
            out.append("{{ " + json.dumps(part, ensure_ascii=False) + " }}")
        elif re.search(r"[{}%#]", part):
            out.append("{% raw %}" + part + "{% endraw %}")
        else:
            out.append(part)
    return "".join(out)


def answer_filter(task: Task, n_options: int) -> tuple[str, int]:
    """The regex (and which match to keep) that reads an answer in ``task``'s format out of a generation."""
    if task.is_multiple_choice:
        return rf"(?<![A-Za-z0-9])([A-{LETTERS[n_options - 1]}])(?![A-Za-z0-9])", 0
    if task.reward == "math_accuracy" and task.answer_cue == "\\boxed":
        return r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}", -1
    if task.reward == "math_accuracy":
        return r"(-?[0-9][0-9,]*(?:\.[0-9]+)?)", -1
    raise UserError(f"task {task.name!r} (reward {task.reward}) has no answer format a regex can read; "
                    "lm-eval export covers multiple-choice and math tasks")


def gold_answer(task: Task, gold: str) -> str:
    """What the filtered answer must equal: the gold letter, or the gold's final answer for math."""
    if task.reward != "math_accuracy":
        return gold
    from rewards.math import parse_gold

    parsed = parse_gold(gold)
    if parsed is None:
        raise UserError(f"task {task.name!r}: cannot read a final answer in gold {gold[:60]!r}")
    return parsed.answer.replace(",", "")


def docs_text(task: Task, rows) -> str:
    """The questions as the harness reads them (JSON Lines): template fields plus ``paft_*`` gold columns."""
    lines = []
    for row in rows:
        example = task.example(row)
        doc = {**example.fields, "paft_row_id": str(row["row_id"]), "paft_gold": example.gold}
        if example.options is not None:
            doc["paft_choices"] = example.options
            doc["paft_gold_index"] = LETTERS.index(example.gold)
        else:
            doc["paft_gold_answer"] = gold_answer(task, example.gold)
        lines.append(json.dumps(doc, ensure_ascii=False) + "\n")
    return "".join(lines)


def task_config(name: str, doc_to_text: str, docs: Path, task: Task, scoring: str, max_new_tokens: int,
                n_options: int) -> dict:
    """One harness task: the template over the exported questions."""
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(docs.resolve())}},
        "test_split": "test",
        "doc_to_text": doc_to_text,
    }
    if scoring == "loglik":
        # paft-rl puts no space before the option when the prompt already ends in whitespace.
        delimiter = "" if doc_to_text[-1:].isspace() else " "
        return {**config, "output_type": "multiple_choice", "doc_to_choice": "paft_choices",
                "doc_to_target": "paft_gold_index", "target_delimiter": delimiter,
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
                "metadata": {"version": 1.0}}
    pattern, select = answer_filter(task, n_options)
    target = "{{ paft_gold }}" if task.is_multiple_choice else "{{ paft_gold_answer }}"
    return {
        **config, "output_type": "generate_until", "doc_to_target": target,
        "generation_kwargs": {"until": [], "do_sample": False, "max_gen_toks": max_new_tokens},
        "filter_list": [{"name": "answer", "filter": [
            {"function": "regex", "regex_pattern": pattern, "group_select": select, "fallback": "[invalid]"},
            {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "regexes_to_ignore": [",", "\\$"]}],
        "metadata": {"version": 1.0},
    }


def default_group(task: Task, pool: PromptPool) -> str:
    """``paft_<task>`` for the task's built-in pool, ``paft_<task>_<pool file stem>`` otherwise."""
    stem = Path(pool.name.split(":")[-1]).stem
    return f"paft_{task.name}" if stem == task.builtin_pool else f"paft_{task.name}_{stem}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower() or "x"


def check_exportable(task: Task, scoring: str) -> None:
    """Reject a task the harness could not score this way, before any pool or data is read."""
    if scoring not in ("generate", "loglik"):
        raise UserError(f"--scoring must be generate or loglik, got {scoring!r}")
    if scoring == "loglik" and not task.is_multiple_choice:
        raise UserError(f"--scoring loglik scores the options of multiple-choice tasks; {task.name!r} has none")
    if scoring == "generate" and task.cloze:
        raise UserError(f"task {task.name!r} is cloze: its prompts show no lettered options for a regex to read; "
                        "export it with --scoring loglik")
    if scoring == "generate":
        answer_filter(task, 2)


def export_lm_eval(pool: PromptPool, task: Task, out: str | Path, group: str | None = None, data: str | None = None,
                   split: str | None = None, limit: int | None = None, seed: int = 0, scoring: str = "generate",
                   max_new_tokens: int | None = None, replace: bool = False) -> dict:
    """Write the task group into ``out``; returns the group name, its task names and the files written.

    Args:
        pool (`PromptPool`): the templates (already validated for ``task``).
        task (`Task`): gives the fields, gold and answer format.
        out (`str` or `Path`): folder for the task files and the questions (``--include_path`` for the harness).
        group (`str`, *optional*): group name (default: `default_group`).
        data / split / limit / seed: the questions, read as ``paft-rl eval`` reads them.
        scoring (`str`, defaults to `"generate"`): ``generate`` or ``loglik`` (multiple choice only).
        max_new_tokens (`int`, *optional*): generation budget (default: the task's).
        replace (`bool`, defaults to `False`): replace an earlier export in ``out`` (refused otherwise); its files
            that this export does not write again are removed, so no stale task is left beside the new ones
            (`earlier_export`; other groups in ``out`` stay).
    """
    check_exportable(task, scoring)
    if not pool.templates:
        raise UserError(f"{pool.name}: no templates to export")
    out = check_output(out, "--out")
    rows = load_rows(task, data, split or task.eval_split, limit, seed)
    if len(rows) == 0:
        raise UserError("the dataset has no rows")
    n_options = max((len(task.example(row).options or []) for row in rows), default=0)
    group = slug(group or default_group(task, pool))
    questions = docs_text(task, rows)
    earlier = earlier_export(out, group, questions)
    refuse_replacing(out, "--out", [path.name for path in earlier], replace)
    docs = atomic_write_text(out / DOCS_FILE, questions)
    names, files = [], [docs]
    for template in pool.templates:
        name = f"{group}_{slug(template.id)}"
        if name in names:
            raise UserError(f"{pool.name}: template ids {template.id!r} and another give the same task name {name!r}")
        names.append(name)
        config = task_config(name, jinja_template(pool, template, list(task.fields)), docs, task, scoring,
                             max_new_tokens or task.max_new_tokens, n_options)
        config["metadata"].update({"paft_template": template.id, "paft_pool": pool.name})
        files.append(atomic_write_text(out / f"{name}.yaml", _yaml(config)))
    metric, filtered = ("acc", "none") if scoring == "loglik" else ("exact_match", "answer")
    group_config = {"group": group, "task": names,
                    "aggregate_metric_list": [{"metric": metric, "aggregation": "mean", "weight_by_size": False,
                                               "filter_list": filtered}],
                    "metadata": {"version": 1.0, "paft_task": task.name, "paft_scoring": scoring}}
    files.append(atomic_write_text(out / f"_{group}.yaml", _yaml(group_config)))
    for stale in set(earlier) - set(files):
        stale.unlink()
    return {"group": group, "tasks": names, "files": files, "questions": len(rows), "metric": f"{metric},{filtered}"}


def earlier_export(out: Path, group: str, questions: str) -> list[Path]:
    """What an earlier export left in ``out`` that this one would replace: the group's config and the task files it
    lists, and the questions file when it holds other questions (other groups in the folder read it too). Other
    groups, and files no export wrote, are not this export's to replace."""
    found = []
    group_file = out / f"_{group}.yaml"
    if group_file.is_file():
        try:
            config = yaml.safe_load(group_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError):
            config = None
        tasks = config.get("task") if isinstance(config, dict) else None
        found.append(group_file)
        for name in tasks if isinstance(tasks, list) else []:
            if isinstance(name, str) and (out / f"{name}.yaml").is_file():
                found.append(out / f"{name}.yaml")
    docs = out / DOCS_FILE
    if docs.is_file() and docs.read_text(encoding="utf-8", errors="replace") != questions:
        found.append(docs)
    return found


def _yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=10**6)
