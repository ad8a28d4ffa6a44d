"""Robustness evaluation: every template over the same questions, for one or more models.

The grid of (template, question) cells is built once; for each model, the cells missing from its resume
log are generated in one backend call (one model load, prompts from all templates batched together),
then every cell is scored by the task's reward, the very function that scores GRPO rollouts.
"""

from __future__ import annotations

import difflib
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from prompt_pool import PromptPool, UserError, builtin_names

from ..tasks import Task, get_task, load_rows, load_task_pool, parse_field_aliases
from .backends import BACKENDS, Generation, Request
from .cache import GenerationLog
from .metrics import model_metrics
from .models import ModelSource, context_length, load_tokenizer, resolve_model


@dataclass
class EvalSettings:
    """What to evaluate and how; written verbatim into ``results.json``.

    Args:
        task (`str`): task name.
        models (`list[str]`): model folders, hub ids or LoRA adapter folders.
        out (`str`): output folder.
        data (`str`, *optional*): hub id or local file (default: the task's dataset).
        split (`str`, *optional*): dataset split (default: the task's evaluation split).
        templates (`str`, defaults to `"heldout"`): ``heldout``, ``train`` or ``all`` of the task's built-in
            pool, or a pool file (evaluated whole, whatever its splits say).
        field_aliases (`list[str]`): ``NAME=FIELD`` pairs for pools written with other field names.
        limit (`int`, *optional*): first ``limit`` questions.
        backend (`str`, defaults to `"hf"`): ``hf`` or ``vllm``.
        max_new_tokens (`int`, *optional*): default: the task's budget.
        batch_size (`int`, defaults to `64`): most prompts decoded together (HF backend).
        max_batch_tokens (`int`, *optional*): most padded prompt tokens per prefill pass (HF backend; 2048 on CPU,
            32768 on GPU).
        top_threshold (`float`, *optional*): default: the task's threshold (PAFT's values).
        chat_template (`bool`, defaults to `True`): wrap prompts in the tokenizer's chat template when it has one.
        dtype (`str`, defaults to `"auto"`): float32 on CPU, bfloat16 on GPU.
        seed (`int`, defaults to `0`): synthetic data seed.
        threads (`int`, *optional*): torch threads on CPU (default: torch's own, one per core). On a machine shared
            with other busy processes, fewer threads avoid OpenMP threads spinning while they wait for each other.
        share_prefix (`bool`, defaults to `True`): HF backend: reuse the cache of the prefix a template's prompts
            share (the outputs are the same; only the work shrinks).
        progress (`bool`, defaults to `True`): show a progress bar.
    """

    task: str
    models: list[str]
    out: str
    data: str | None = None
    split: str | None = None
    templates: str = "heldout"
    field_aliases: list[str] = field(default_factory=list)
    limit: int | None = None
    backend: str = "hf"
    max_new_tokens: int | None = None
    batch_size: int = 64
    max_batch_tokens: int | None = None
    top_threshold: float | None = None
    chat_template: bool = True
    dtype: str = "auto"
    seed: int = 0
    threads: int | None = None
    share_prefix: bool = True
    progress: bool = True


@dataclass(frozen=True)
class Cell:
    """One (template, question) pair: the rendered prompt and what the reward needs."""

    template: str
    row: str
    prompt: str
    gold: str
    options: list[str] | None


def check_settings(settings: EvalSettings) -> None:
    """Reject bad numbers and names before anything is loaded."""
    if not settings.models:
        raise UserError("pass at least one --model")
    if settings.limit is not None and settings.limit <= 0:
        raise UserError(f"--limit must be a positive number of questions, got {settings.limit}")
    if settings.max_new_tokens is not None and settings.max_new_tokens <= 0:
        raise UserError(f"--max-new-tokens must be positive, got {settings.max_new_tokens}")
    if settings.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {settings.batch_size}")
    if settings.max_batch_tokens is not None and settings.max_batch_tokens <= 0:
        raise UserError(f"--max-batch-tokens must be positive, got {settings.max_batch_tokens}")
    if settings.top_threshold is not None and not 0.0 <= settings.top_threshold <= 1.0:
        raise UserError(f"--top-threshold is an accuracy between 0 and 1, got {settings.top_threshold}")
    if settings.threads is not None and settings.threads <= 0:
        raise UserError(f"--threads must be a positive number of threads, got {settings.threads}")
    if settings.backend not in BACKENDS:
        raise UserError(f"unknown backend {settings.backend!r}; choose from {', '.join(BACKENDS)}")
    if len(set(settings.models)) != len(settings.models):
        raise UserError("the same --model is given twice")


def eval_templates(task: Task, spec: str, aliases: list[str]) -> PromptPool:
    """The templates to evaluate: a split of the task's built-in pool, or a whole pool file."""
    if spec in ("heldout", "train", "all"):
        pool = load_task_pool(task, None, aliases).subset(spec)
        if not pool.templates:
            raise UserError(f"the built-in pool of task {task.name!r} has no {spec} templates")
        return pool
    if not Path(spec).exists() and spec not in builtin_names():
        close = difflib.get_close_matches(spec, ["heldout", "train", "all"], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"--templates {spec!r} is neither a split of the task's pool nor a pool file: {hint}use "
                        "heldout, train, all, or the path of a pool file")
    pool = load_task_pool(task, spec, aliases, validate=False)
    # A file is evaluated whole, so it is validated as if every template were usable (no train split needed).
    everything_usable = replace(pool, templates=[replace(t, split="train") for t in pool.templates])
    everything_usable.validate(task)
    if not pool.templates:
        raise UserError(f"template file {spec!r} holds no template")
    return pool


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


def model_label(spec: str) -> str:
    """A file-name-safe name for a model spec."""
    name = Path(spec).name or spec
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "model"


def chat_prompts(tokenizer, cells: list[Cell], use_chat: bool) -> dict[tuple[str, str], str]:
    """The exact text fed to the model for each cell (chat-formatted when the tokenizer has a template)."""
    if not (use_chat and getattr(tokenizer, "chat_template", None)):
        return {(c.template, c.row): c.prompt for c in cells}
    return {
        (c.template, c.row): tokenizer.apply_chat_template(
            [{"role": "user", "content": c.prompt}], tokenize=False, add_generation_prompt=True)
        for c in cells
    }


def tokenize_prompts(tokenizer, prompts: dict[tuple[str, str], str], chat: bool) -> dict[tuple[str, str], list[int]]:
    # A chat template writes its own special tokens; plain prompts get the tokenizer's usual ones (a BOS).
    keys = list(prompts)
    encoded = tokenizer([prompts[k] for k in keys], add_special_tokens=not chat)["input_ids"]
    return dict(zip(keys, encoded))


@dataclass
class PreparedModel:
    """A model ready to generate: its source, tokenizer, exact prompts and token ids, and resume log."""

    source: ModelSource
    tokenizer: object
    prompts: dict[tuple[str, str], str]
    prompt_ids: dict[tuple[str, str], list[int]]
    log: GenerationLog


def prepare_model(spec: str, cells: list[Cell], settings: EvalSettings, max_new_tokens: int) -> PreparedModel:
    """Tokenise every prompt and check the context holds the longest one, before any weights are loaded."""
    source = resolve_model(spec)
    tokenizer = load_tokenizer(source)
    chat = settings.chat_template and bool(getattr(tokenizer, "chat_template", None))
    prompts = chat_prompts(tokenizer, cells, chat)
    prompt_ids = tokenize_prompts(tokenizer, prompts, chat)
    longest_key = max(prompt_ids, key=lambda k: len(prompt_ids[k]))
    needed = len(prompt_ids[longest_key]) + max_new_tokens
    limit = context_length(source, tokenizer)
    if limit is not None and needed > limit:
        raise UserError(
            f"model {spec!r} holds {limit} tokens but template {longest_key[0]!r} on question {longest_key[1]} needs "
            f"{len(prompt_ids[longest_key])} prompt + {max_new_tokens} new tokens; use shorter templates or data, "
            "a smaller --max-new-tokens, or a model with a longer context")
    log_settings = {"model": _model_identity(source), "backend": settings.backend, "max_new_tokens": max_new_tokens,
                    "chat": chat, "dtype": settings.dtype}
    log = GenerationLog(Path(settings.out), model_label(spec), log_settings)
    return PreparedModel(source, tokenizer, prompts, prompt_ids, log)


def _model_identity(source: ModelSource) -> list[str | None]:
    return [str(Path(p).resolve()) if p and Path(p).exists() else p for p in (source.base, source.adapter)]


def generate_missing(prepared: PreparedModel, settings: EvalSettings, max_new_tokens: int) -> int:
    """Generate the cells the resume log lacks; returns how many were generated."""
    missing = [key for key, prompt in prepared.prompts.items() if prepared.log.get(key, prompt) is None]
    if not missing:
        return 0
    longest = max(len(prepared.prompt_ids[k]) for k in missing) + max_new_tokens
    backend_class = BACKENDS[settings.backend]
    backend = backend_class(prepared.source, prepared.tokenizer, max_new_tokens, batch_size=settings.batch_size,
                            dtype=settings.dtype, max_model_len=longest, share_prefix=settings.share_prefix,
                            max_batch_tokens=settings.max_batch_tokens)
    prepared.log.record_load(backend.load_seconds)
    requests = [Request(key, prepared.prompt_ids[key]) for key in missing]
    progress = _progress_bar(len(requests), model_label(prepared.source.spec), settings.progress)
    try:
        backend.generate(requests, lambda results: prepared.log.record(results, prepared.prompts), progress)
    finally:
        if progress is not None:
            progress.close()
    return len(missing)


def _progress_bar(total: int, label: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"eval {label}", unit="prompt", dynamic_ncols=True)


def evaluate_model(spec: str, prepared: PreparedModel, cells: list[Cell], task: Task, top_threshold: float,
                   max_new_tokens: int, settings: EvalSettings) -> tuple[dict, list[dict]]:
    """Generate what is missing, score every cell with the task reward; returns metrics and generation records."""
    from .scoring import score_cells

    generated = generate_missing(prepared, settings, max_new_tokens)
    generations: dict[tuple[str, str], Generation] = {}
    for cell in cells:
        key = (cell.template, cell.row)
        generation = prepared.log.get(key, prepared.prompts[key])
        if generation is None:
            raise RuntimeError(f"no generation for template {cell.template!r} question {cell.row} after generating")
        generations[key] = generation
    records = score_cells(task, cells, generations)
    grid: dict[str, dict[str, float | None]] = {}
    for record in records:
        grid.setdefault(record["template"], {})[record["row_id"]] = record["score"]
    seconds = prepared.log.load_seconds + sum(g.seconds for g in generations.values())
    metrics = model_metrics(grid, top_threshold, [g.tokens for g in generations.values()], seconds)
    metrics["generated_this_run"] = generated
    for record in records:
        record["model"] = spec
    return metrics, records


def evaluate(settings: EvalSettings) -> tuple[dict, list[dict]]:
    """Run the whole evaluation. Returns ``results`` (what ``results.json`` holds) and the generation records.

    Every input is checked (task, templates, data, model paths, tokenizers, context length) before the
    first model's weights are loaded.
    """
    check_settings(settings)
    if Path(settings.out).exists() and not Path(settings.out).is_dir():
        raise UserError(f"--out {settings.out} is a file: name a folder for the results (it is created if missing)")
    task = get_task(settings.task)
    parse_field_aliases(settings.field_aliases)
    pool = eval_templates(task, settings.templates, settings.field_aliases)
    max_new_tokens = settings.max_new_tokens or task.max_new_tokens
    top_threshold = task.top_threshold if settings.top_threshold is None else settings.top_threshold
    for spec in settings.models:
        resolve_model(spec)  # a mistyped path fails before the data is loaded
    cells = build_cells(task, pool, settings)
    prepared = {spec: prepare_model(spec, cells, settings, max_new_tokens) for spec in settings.models}
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    results = {
        "settings": {**asdict(settings), "max_new_tokens": max_new_tokens, "top_threshold": top_threshold,
                     "split": settings.split or task.eval_split, "reward": task.reward,
                     "template_ids": [t.id for t in pool.templates], "n_questions": len(cells) // len(pool.templates)},
        "models": {},
    }
    records: list[dict] = []
    for spec in settings.models:
        metrics, model_records = evaluate_model(spec, prepared[spec], cells, task, top_threshold, max_new_tokens, settings)
        results["models"][spec] = metrics
        records += model_records
    results["wall_seconds"] = time.perf_counter() - started
    return results, records
