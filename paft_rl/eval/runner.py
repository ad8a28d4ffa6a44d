"""Robustness evaluation: every template over the same questions, for one or more models.

The grid of (template, question) cells is built once; for each model, the cells missing from its resume
log are generated in one backend call (one model load, prompts from all templates batched together),
then every cell is scored by the task's reward, the very function that scores GRPO rollouts.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from prompt_pool import PromptPool, UserError, short_value

from ..formatting import PromptFormat, tokenize_prompt_texts
from ..outputs import check_output
from ..settings import SettingError, Settings, option
from ..tasks import (
    TEXT_ANSWER_MARGIN,
    Task,
    get_task,
    load_rows,
    parse_field_aliases,
    text_answer_tokens,
)
from .answers import answer_metrics
from .backends import BACKENDS, Generation, Request
from .budget import BudgetPlan, estimated_metrics, plan_budget
from .cache import GenerationLog
from .fingerprint import model_fingerprint
from .folder import changed_kept_models, check_same_evaluation, keep_previous_models, previous_results
from .metrics import model_metrics
from .models import ModelSource, context_length, load_tokenizer, model_labels, resolve_model
from .templates import SPLIT_SPECS, eval_templates


@dataclass
class EvalSettings(Settings):
    """What to evaluate and how; written verbatim into ``results.json``.

    Read by ``paft-rl eval`` from ``--config eval.yaml`` and ``--key value`` flags (`paft_rl.settings`), or built
    in code. Each value is checked when the dataclass is built; what needs the models (at least one, labels one
    per model) is checked by `check_settings` when `evaluate` starts, so workflows can build an evaluation
    section before they know which models it will judge.

    Args:
        task (`str`): task name.
        models (`list[str]`): model folders, hub ids or LoRA adapter folders.
        out (`str`): output folder.
        data (`str`, *optional*): hub id or local file (default: the task's dataset).
        split (`str`, *optional*): dataset split (default: the task's evaluation split).
        templates (`str`, defaults to `"heldout"`): ``heldout``, ``train`` or ``all`` of ``pool``, or a pool file
            (evaluated whole, whatever its splits say).
        pool (`str`, *optional*): the pool whose split ``templates`` names: a file or built-in pool name, the
            training recipe's ``pool`` (so held-out means unseen in that training). Default: the task's built-in pool.
        mc_answer_style (`str`, *optional*): multiple choice, the training recipe's ``mc_answer_style``: ``text``
            answers copy an option, so the default generation budget grows to hold the longest option, and a
            ``max_new_tokens`` too small for it is refused. Default: the task's own style.
        field_aliases (`list[str]`): ``NAME=FIELD`` pairs for pools written with other field names.
        limit (`int`, *optional*): first ``limit`` questions.
        backend (`str`, defaults to `"hf"`): ``hf`` or ``vllm``.
        max_new_tokens (`int`, *optional*): default: the task's budget.
        batch_size (`int`, defaults to `64`): most prompts decoded together (HF backend).
        max_batch_tokens (`int`, *optional*): most padded prompt tokens per prefill pass (HF backend; 2048 on CPU,
            32768 on GPU).
        top_threshold (`float`, *optional*): default: the task's threshold (PAFT's values).
        prompt_format (`str`, defaults to `"auto"`): ``chat`` (each prompt is the user turn of the tokenizer's chat
            template), ``plain`` (raw text) or ``auto`` (chat when the tokenizer has a chat template): the training
            recipe's option, so the model sees what it was trained on.
        system_prompt (`str`, *optional*): system message before each chat prompt, as the training recipe's.
        dtype (`str`, defaults to `"auto"`): float32 on CPU, bfloat16 on GPU.
        seed (`int`, defaults to `0`): synthetic data seed.
        threads (`int`, *optional*): torch threads on CPU (default: torch's own, one per core). On a machine shared
            with other busy processes, fewer threads avoid OpenMP threads spinning while they wait for each other.
        share_prefix (`bool`, defaults to `True`): HF backend: reuse the cache of the prefix a template's prompts
            share (the outputs are the same; only the work shrinks).
        progress (`bool`, defaults to `True`): show a progress bar.
        labels (`list[str]`): short names for the models in tables and plots, one per model (default: derived
            from each folder's name, see `models.derive_label`).
        scoring (`str`, *optional*): ``generate`` (greedy answers scored by the task reward) or ``loglik``
            (multiple choice: the option the model finds likeliest after the prompt, see `loglik`). Default: the
            task's (``loglik`` for cloze tasks, whose prompts show no options, ``generate`` otherwise).
        budget (`float` or `str`, *optional*): generate only this share of the grid (``0.1``, ``"10%"``) or
            this many cells (``500``), chosen by a balanced design seeded by ``seed``, and estimate every
            template's accuracy over all questions with an item-response model (see `paft_rl.eval.budget`).
        target_error (`float`, *optional*): add cells in rounds (each the size of the first) until the 90 %
            intervals of the mean and of the worst template are narrower than this, or the grid is full.
    """

    task: str = option(help="task name (gsm8k, piqa, synth_mc, ...)")
    models: list[str] = option(help="model folders, hub ids or LoRA adapter folders (--models A B)",
                               aliases=["--model"])
    out: str = option(help="output folder (run again with it to resume or to add models)")
    data: str | None = option(None, help="hub id or local file (default: the task's dataset)")
    split: str | None = option(None, help="dataset split (default: the task's evaluation split)")
    templates: str = option("heldout", help="heldout, train or all of --pool, or a pool file evaluated whole "
                                            "(default: heldout)")
    pool: str | None = option(None, help="pool file or built-in pool name whose split --templates names: the "
                                         "training recipe's pool, so heldout means unseen in training (default: "
                                         "the task's built-in pool)")
    mc_answer_style: Literal["letter", "text"] | None = option(
        None, help="multiple choice: the training recipe's mc_answer_style; text answers copy an option, so the "
                   "generation budget holds the longest option (default: the task's style)")
    field_aliases: list[str] = option(help="NAME=FIELD pairs: the pool's {NAME} is the task's FIELD",
                                      default_factory=list)
    limit: int | None = option(None, help="evaluate the first N questions", positive=True)
    backend: Literal["hf", "vllm"] = option("hf", help="generation backend")
    max_new_tokens: int | None = option(None, help="generation budget (default: the task's)", positive=True)
    batch_size: int = option(64, help="most prompts decoded together, hf backend", positive=True)
    max_batch_tokens: int | None = option(None, help="most padded prompt tokens per prefill pass, hf backend "
                                                     "(default: 2048 on CPU, 32768 on GPU)", positive=True)
    top_threshold: float | None = option(None, help="accuracy a template needs to count in Top, between 0 and 1 "
                                                    "(default: the task's, PAFT's values)")
    prompt_format: Literal["auto", "chat", "plain"] = option(
        "auto", help="chat: each prompt is the user turn of the chat template; plain: raw text; auto: chat when the "
                     "tokenizer has a chat template. Use the training recipe's value")
    system_prompt: str | None = option(None, help="system message before each chat prompt (the training recipe's)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", help="weights' dtype; auto: float32 on CPU, bfloat16 on GPU")
    seed: int = option(0, help="seed of synthetic task data and of the budget's design")
    threads: int | None = option(None, help="torch threads on CPU (default: one per core; fewer on a machine busy "
                                            "with other work)", positive=True)
    share_prefix: bool = option(True, help="hf backend: reuse the cache of the prefix a template's prompts share "
                                           "(--no_share_prefix batches all prompts by length instead)")
    progress: bool = option(True, help="show a progress bar (--no_progress hides it)")
    labels: list[str] = option(help="short name of each model in tables and plots, in the order of --models "
                                    "(default: from the folder name)", default_factory=list)
    scoring: Literal["generate", "loglik"] | None = option(
        None, help="generate: greedy answers scored by the task reward; loglik: multiple choice by the likeliest "
                   "option after the prompt, as lm-eval scores PIQA/HellaSwag/ARC (default: loglik for cloze "
                   "tasks, generate otherwise)")
    # float before str: transformers' parser reads such a union as text (`--budget 10%`), while a YAML number
    # stays a number; `budget.budget_cells` reads both.
    budget: float | str | None = option(
        None, help="generate only this share of the grid (0.1 or 10%%) or this many cells (500), chosen so every "
                   "template and question appears, and estimate all accuracies with an item-response model")
    target_error: float | None = option(
        None, help="add cells in rounds until the 90%% intervals of the mean and the worst template are narrower "
                   "than this, or the grid is full (starts from --budget)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_threshold is not None and not 0.0 <= self.top_threshold <= 1.0:
            raise SettingError("top_threshold", f"is an accuracy between 0 and 1, got {self.top_threshold}")
        if self.target_error is not None and not 0.0 < self.target_error < 1.0:
            raise SettingError("target_error", f"is an interval width between 0 and 1 (0.05), got {self.target_error}")
        if self.scoring == "loglik" and self.backend != "hf":
            raise SettingError("scoring", "loglik runs on the hf backend; set backend hf")
        if self.pool is not None and self.templates not in SPLIT_SPECS:
            raise SettingError("pool", f"names the pool whose split templates picks, but templates is the file "
                                       f"{self.templates!r} (evaluated whole): give one of them")


@dataclass(frozen=True)
class Cell:
    """One (template, question) pair: the rendered prompt and what the reward needs."""

    template: str
    row: str
    prompt: str
    gold: str
    options: list[str] | None


def check_settings(settings: EvalSettings) -> None:
    """What the dataclass cannot check alone: the models (given, none twice, one label each)."""
    if not settings.models:
        raise UserError("pass at least one model: --models A [B ...]")
    if len(set(settings.models)) != len(settings.models):
        raise UserError("the same model is given twice in --models")
    model_labels(settings.models, settings.labels)


def build_cells(task: Task, pool: PromptPool, settings: EvalSettings) -> list[Cell]:
    """Every (template, question) cell, template-major."""
    rows = load_rows(task, settings.data, settings.split or task.eval_split, settings.limit, settings.seed)
    if len(rows) == 0:
        raise UserError("the dataset has no rows")
    examples = [(str(row["row_id"]), task.example(row)) for row in rows]
    return [
        Cell(template.id, row_id, pool.render(template, example.fields), example.gold, example.options)
        for template in pool.templates
        for row_id, example in examples
    ]


def generation_budget(task: Task, cells: list[Cell], settings: EvalSettings) -> tuple[int, str | None]:
    """``max_new_tokens``: the setting, else the task's. A ``text`` answer to multiple choice copies an option, so
    the task's budget grows to hold the longest option (measured with each model's tokenizer); a budget set
    smaller than that is kept, with a note to say that right answers will be cut (the second value)."""
    budget = settings.max_new_tokens or task.max_new_tokens
    if (settings.scoring or task.default_scoring) != "generate" or not task.answers_with_text:
        return budget, None
    options = {cell.row: cell.options for cell in cells}.values()  # each question's, once
    tokens, option = max(text_answer_tokens(task, options, load_tokenizer(resolve_model(spec)))
                         for spec in settings.models)
    if settings.max_new_tokens is None:
        return max(budget, tokens + TEXT_ANSWER_MARGIN), None
    if settings.max_new_tokens < tokens:
        return budget, (f"paft-rl eval: note: max_new_tokens {budget} cuts text answers: option {short_value(option)} "
                        f"is {tokens} tokens (leave max_new_tokens unset to size the budget from the options)")
    return budget, None


def chance_accuracy(cells: list[Cell]) -> float | None:
    """Expected accuracy of a uniform random pick among each question's options; ``None`` without options."""
    if not cells or cells[0].options is None:
        return None
    return sum(1 / len(c.options) for c in cells) / len(cells)


def model_label(spec: str) -> str:
    """A file-name-safe name for a model spec."""
    name = Path(spec).name or spec
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "model"


def model_prompts(tokenizer, cells: list[Cell], prompt_format: PromptFormat) -> dict[tuple[str, str], str]:
    """The exact text fed to the model for each cell: the text the trainers' prompts become (`PromptFormat`)."""
    return {(c.template, c.row): prompt_format.text(tokenizer, c.prompt) for c in cells}


def tokenize_prompts(tokenizer, prompts: dict[tuple[str, str], str], chat: bool) -> dict[tuple[str, str], list[int]]:
    keys = list(prompts)
    encoded = tokenize_prompt_texts(tokenizer, [prompts[k] for k in keys], chat)
    return dict(zip(keys, encoded))


@dataclass
class PreparedModel:
    """A model ready to generate: its source, tokenizer, exact prompts and token ids, and resume log (which knows
    the fingerprint of the model's files)."""

    source: ModelSource
    tokenizer: object
    prompts: dict[tuple[str, str], str]
    prompt_ids: dict[tuple[str, str], list[int]]
    log: GenerationLog
    chat: bool = False
    choices: dict | None = None  # loglik scoring: `loglik.ChoiceRequest` per cell


def prepare_model(spec: str, cells: list[Cell], settings: EvalSettings, max_new_tokens: int) -> PreparedModel:
    """Tokenise every prompt and check the context holds the longest one, before any weights are loaded."""
    source = resolve_model(spec)
    tokenizer = load_tokenizer(source)
    prompt_format = PromptFormat.resolve(settings.prompt_format, tokenizer, settings.system_prompt)
    chat = prompt_format.chat
    prompts = model_prompts(tokenizer, cells, prompt_format)
    prompt_ids = tokenize_prompts(tokenizer, prompts, chat)
    longest_key = max(prompt_ids, key=lambda k: len(prompt_ids[k]))
    needed = len(prompt_ids[longest_key]) + max_new_tokens
    limit = context_length(source, tokenizer)
    if limit is not None and needed > limit:
        raise UserError(
            f"model {spec!r} holds {limit} tokens but template {longest_key[0]!r} on question {longest_key[1]} needs "
            f"{len(prompt_ids[longest_key])} prompt + {max_new_tokens} new tokens; use shorter templates or data, "
            "a smaller --max_new_tokens, or a model with a longer context")
    log_settings = {"model": _model_identity(source), "backend": settings.backend, "max_new_tokens": max_new_tokens,
                    "chat": chat, "dtype": settings.dtype}
    choices = None
    if settings.scoring == "loglik":
        choices = prepare_choices(spec, tokenizer, cells, prompts, prompt_ids, chat, limit)
        log_settings = {**log_settings, "scoring": "loglik", "max_new_tokens": None}
    # After the tokenizer and config loaded: a hub model's snapshot is then in the cache, and names its commit.
    log = GenerationLog(Path(settings.out), model_label(spec), log_settings, model_fingerprint(spec))
    return PreparedModel(source, tokenizer, prompts, prompt_ids, log, chat, choices)


def prepare_choices(spec: str, tokenizer, cells: list[Cell], prompts: dict, prompt_ids: dict, chat: bool,
                    limit: int | None) -> dict:
    """Option continuations of every cell, checked against the model's context."""
    from .loglik import choice_requests

    choices = choice_requests(tokenizer, cells, prompts, prompt_ids, chat)
    longest = max(choices.values(), key=lambda r: r.longest)
    if limit is not None and longest.longest > limit:
        raise UserError(f"model {spec!r} holds {limit} tokens but template {longest.key[0]!r} on question "
                        f"{longest.key[1]} needs {longest.longest} with its longest option; use shorter templates "
                        "or data")
    return choices


def _model_identity(source: ModelSource) -> list[str | None]:
    return [str(Path(p).resolve()) if p and Path(p).exists() else p for p in (source.base, source.adapter)]


def load_backend(prepared: PreparedModel, settings: EvalSettings, max_new_tokens: int):
    """The model's weights in the backend that generates (or, for loglik scoring, scores the options of) its cells;
    sized for its longest prompt, so a budgeted run's later rounds reuse it."""
    if prepared.choices is not None:
        from .backends import HFBackend

        backend = HFBackend(prepared.source, prepared.tokenizer, 1, batch_size=settings.batch_size,
                            dtype=settings.dtype, max_batch_tokens=settings.max_batch_tokens)
    else:
        longest = max(len(ids) for ids in prepared.prompt_ids.values()) + max_new_tokens
        backend = BACKENDS[settings.backend](
            prepared.source, prepared.tokenizer, max_new_tokens, batch_size=settings.batch_size, dtype=settings.dtype,
            max_model_len=longest, share_prefix=settings.share_prefix, max_batch_tokens=settings.max_batch_tokens)
    prepared.log.record_load(backend.load_seconds)
    return backend


def generate_missing(prepared: PreparedModel, settings: EvalSettings, max_new_tokens: int,
                     keys: list[tuple[str, str]] | None = None, backend=None) -> tuple[int, object]:
    """Generate (or, for loglik scoring, score the options of) the cells (all, or those in ``keys``) the resume
    log lacks, logged batch by batch so an interrupted run resumes. Returns how many, and the backend (``backend``,
    or one loaded now when there was work; ``None`` when nothing was missing and nothing was given)."""
    wanted = prepared.prompts if keys is None else keys
    missing = [key for key in wanted if prepared.log.get(key, prepared.prompts[key]) is None]
    if not missing:
        return 0, backend
    backend = backend or load_backend(prepared, settings, max_new_tokens)
    progress = _progress_bar(len(missing), model_label(prepared.source.spec), settings.progress)
    saved = [0]

    def record(results) -> None:
        prepared.log.record(results, prepared.prompts)
        saved[0] += len(results)

    try:
        if prepared.choices is not None:
            backend.score_options([prepared.choices[key] for key in missing], record, progress)
        else:
            backend.generate([Request(key, prepared.prompt_ids[key]) for key in missing], record, progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {saved[0]} of {len(missing)} prompts of {model_label(prepared.source.spec)} are saved "
              f"in {prepared.log.path.parent}; run the same command again to continue", file=sys.stderr)
        raise
    finally:
        if progress is not None:
            progress.close()
    return len(missing), backend


def seen_prompts(prepared: PreparedModel) -> dict[tuple[str, str], str]:
    """The exact text each prompt reached the model as: the chat-formatted prompt, with the BOS token the
    tokenizer put in front of a plain prompt."""
    bos, bos_id = prepared.tokenizer.bos_token, prepared.tokenizer.bos_token_id
    seen = {}
    for key, prompt in prepared.prompts.items():
        ids = prepared.prompt_ids[key]
        added_bos = not prepared.chat and bos is not None and ids[:1] == [bos_id] and not prompt.startswith(bos)
        seen[key] = bos + prompt if added_bos else prompt
    return seen


def _progress_bar(total: int, label: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"eval {label}", unit="prompt", dynamic_ncols=True)


def evaluate_model(spec: str, prepared: PreparedModel, cells: list[Cell], task: Task, top_threshold: float,
                   max_new_tokens: int, settings: EvalSettings) -> tuple[dict, list[dict]]:
    """Generate what is missing, score every cell with the task reward; returns metrics and generation records."""
    generated, _ = generate_missing(prepared, settings, max_new_tokens)
    records, generations = score_generated(prepared, cells, task)
    grid: dict[str, dict[str, float | None]] = {}
    for record in records:
        grid.setdefault(record["template"], {})[record["row_id"]] = record["score"]
    seconds = prepared.log.load_seconds + sum(g.seconds for g in generations.values())
    tokens = [] if prepared.choices is not None else [g.tokens for g in generations.values()]
    metrics = model_metrics(grid, top_threshold, tokens, seconds)
    metrics["generated_this_run"] = generated
    metrics.update(answer_metrics(records, task.is_multiple_choice))
    for record in records:
        record["model"] = spec
    return metrics, records


def score_generated(prepared: PreparedModel, cells: list[Cell], task: Task) -> tuple[list[dict], dict]:
    """Score the logged generations of ``cells`` with the task reward; returns the records and the generations."""
    from .scoring import score_cells

    generations: dict[tuple[str, str], Generation] = {}
    for cell in cells:
        key = (cell.template, cell.row)
        generation = prepared.log.get(key, prepared.prompts[key])
        if generation is None:
            raise RuntimeError(f"no generation for template {cell.template!r} question {cell.row} after generating")
        generations[key] = generation
    return score_cells(task, cells, generations, seen_prompts(prepared)), generations


def evaluate(settings: EvalSettings) -> tuple[dict, list[dict]]:
    """Run the whole evaluation. Returns ``results`` (what ``results.json`` holds) and the generation records.

    Every input is checked (task, templates, data, model paths, tokenizers, context length) before the
    first model's weights are loaded.
    """
    check_settings(settings)
    check_output(settings.out, "--out")
    task = get_task(settings.task).with_answer_style(settings.mc_answer_style)
    if settings.scoring is None:
        settings = replace(settings, scoring=task.default_scoring)
    if settings.scoring == "loglik" and not task.is_multiple_choice:
        raise UserError(f"--scoring loglik scores the options of multiple-choice tasks; {task.name!r} has none")
    parse_field_aliases(settings.field_aliases)
    pool = eval_templates(task, settings.templates, settings.field_aliases, settings.pool)
    top_threshold = task.top_threshold if settings.top_threshold is None else settings.top_threshold
    for spec in settings.models:
        resolve_model(spec)  # a mistyped path fails before the data is loaded
    cells = build_cells(task, pool, settings)
    max_new_tokens, budget_note = generation_budget(task, cells, settings)
    budgeted = settings.budget is not None or settings.target_error is not None
    plan = plan_budget(cells, [t.id for t in pool.templates], settings.budget, settings.seed) if budgeted else None
    prepared = {spec: prepare_model(spec, cells, settings, max_new_tokens) for spec in settings.models}
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    results = {
        "settings": {**asdict(settings), "max_new_tokens": max_new_tokens, "top_threshold": top_threshold,
                     "split": settings.split or task.eval_split, "reward": task.reward,
                     "template_ids": [t.id for t in pool.templates], "n_questions": len(cells) // len(pool.templates),
                     "labels": model_labels(settings.models, settings.labels),
                     "chance_accuracy": chance_accuracy(cells)},
        "models": {},
    }
    previous = previous_results(settings.out)
    if previous is not None:
        check_same_evaluation(previous, results["settings"], settings.out)  # before any weights load
    for spec in settings.models:
        log = prepared[spec].log
        if log.replaced == "unrecorded":
            print(f"the answers of model {spec} in {settings.out} do not record which model files made them (an older "
                  "paft-rl wrote them): evaluating it again", file=sys.stderr)
        elif log.replaced is not None:
            print(f"model {spec} changed since its answers in {settings.out} were written (fingerprint {log.replaced} "
                  f"-> {log.model_fingerprint}): evaluating it again", file=sys.stderr)
    for line in changed_kept_models(previous, settings.models):
        print(line, file=sys.stderr)
    if budget_note:  # said once every input is checked, so a refusal stays one line
        print(budget_note, file=sys.stderr)
    records: list[dict] = []
    for spec, label in zip(settings.models, results["settings"]["labels"]):
        if plan is None:
            metrics, model_records = evaluate_model(spec, prepared[spec], cells, task, top_threshold, max_new_tokens,
                                                    settings)
        else:
            metrics, model_records = evaluate_budgeted(spec, prepared[spec], plan, task, top_threshold, max_new_tokens,
                                                       settings)
        results["models"][spec] = {"label": label, "model_fingerprint": prepared[spec].log.model_fingerprint,
                                   **metrics}
        records += [{**record, "label": label} for record in model_records]
    results["wall_seconds"] = time.perf_counter() - started
    return keep_previous_models(previous, results, records, settings.out)


def evaluate_budgeted(spec: str, prepared: PreparedModel, plan: BudgetPlan, task: Task, top_threshold: float,
                      max_new_tokens: int, settings: EvalSettings) -> tuple[dict, list[dict]]:
    """Generate and score the design's first cells, estimate the whole grid; with a target error, add a round of
    cells while the intervals of the mean and the worst template are wider than it."""
    cells_used = plan.first_cells
    generated, rounds, backend = 0, 0, None
    while True:
        rounds += 1
        chosen = plan.cells[:cells_used]
        count, backend = generate_missing(prepared, settings, max_new_tokens, [(c.template, c.row) for c in chosen],
                                          backend)
        generated += count
        records, generations = score_generated(prepared, chosen, task)
        metrics = estimated_metrics(plan, records, top_threshold, settings.seed)
        if (settings.target_error is None or cells_used == len(plan.cells)
                or plan.narrow_enough(metrics, settings.target_error)):
            break
        cells_used = min(len(plan.cells), cells_used + plan.first_cells)
    metrics["estimated"]["rounds"] = rounds
    metrics["estimated"]["target_error"] = settings.target_error
    metrics["mean_tokens"] = sum(g.tokens for g in generations.values()) / len(generations)
    metrics["seconds"] = prepared.log.load_seconds + sum(g.seconds for g in generations.values())
    metrics["generated_this_run"] = generated
    metrics.update(answer_metrics(records, task.is_multiple_choice))  # over the cells generated
    for record in records:
        record["model"] = spec
    return metrics, records
