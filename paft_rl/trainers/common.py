"""What the SFT and GRPO trainers share: the template chooser, prompt building and the pre-flight checks.

The one invariant: the template of an example is a pure function of ``(seed, row id, position)``, where the
position is the optimizer step divided by K (in GRPO, the optimizer step at which the example's generation cycle
starts). No RNG state, no per-process state: every rank, and a run resumed
from a checkpoint, computes the same template from the same three numbers.
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets

from prompt_pool import PromptPool, Template, UserError, draw_index
from prompt_pool.template import placeholders

from ..eval.templates import eval_templates
from ..formatting import build_prompt, prompt_text
from ..outputs import check_output
from ..tasks import Task, get_task, load_rows, load_task_pool

if TYPE_CHECKING:
    from ..selection.adaptive import AdaptiveWeights

FIELDS_COLUMN = "paft_fields"  # JSON of the example's template fields (Arrow cannot hold rows of varying keys)
EVAL_TEMPLATE_COLUMN = "paft_eval_template"  # the template id of an eval row (fixed for the whole run)
ANSWER_FORMAT_COLUMN = "answer_format"  # GRPO: the answer format each completion's template declared (template_format)

logger = logging.getLogger("paft_rl.trainers")


@dataclass
class TemplateChooser:
    """Chooses the template of each example.

    Args:
        pool (`PromptPool`): the validated pool (only its train templates are drawn).
        seed (`int`): seed of the draws.
        every (`int`, defaults to `1`): PAFT's K, in optimizer steps.
        draw (`str`, defaults to `"uniform"`): ``uniform``, ``fixed`` or ``top``.
        fixed (`Template`, *optional*): the single template of the ``fixed`` and ``top`` draws.
        adaptive (`AdaptiveWeights`, *optional*): SAPO's adaptive draw weights, read at every draw (they change
            as the run learns); uniform draws without it. See `following`.
        eval_pool (`PromptPool`, *optional*): the templates of evaluation during training; defaults to the
            pool's held-out templates.
        per_group (`int`, defaults to `1`): GRPO's m, the distinct templates of one rollout group (see `grouped`).
    """

    pool: PromptPool
    seed: int
    every: int = 1
    draw: str = "uniform"
    fixed: Template | None = None
    adaptive: AdaptiveWeights | None = None
    eval_pool: PromptPool | None = None
    per_group: int = 1

    def position(self, step: int) -> int:
        """The draw position of optimizer step ``step``: the block of K steps it falls in."""
        return int(step) // self.every

    @property
    def weights(self) -> dict[str, float] | None:
        """The draw weights by template id now: the adaptive weights' current ones, or `None` (uniform)."""
        return self.adaptive.weights if self.adaptive is not None else None

    def following(self, adaptive: AdaptiveWeights) -> TemplateChooser:
        """This chooser, drawing by ``adaptive``'s weights (a reference: each draw sees the latest update)."""
        if self.fixed is not None:
            raise UserError(f"template_draw {self.draw!r} trains one template: adaptive draw weights need a pool "
                            "draw (template_draw: sapo or sapo_reward)")
        if [t.id for t in adaptive.pool.train] != [t.id for t in self.pool.train]:
            raise UserError("the adaptive draw weights are over other train templates than the chooser's: build "
                            "both from the same pool")
        return replace(self, adaptive=adaptive)

    def grouped(self, templates: int) -> TemplateChooser:
        """This chooser, spreading each GRPO rollout group over ``templates`` distinct train templates (1: one)."""
        if templates > 1 and self.fixed is not None:
            raise UserError(f"template_draw {self.draw!r} trains one template: mixed groups need a pool draw "
                            "(template_draw: uniform, sapo or sapo_reward)")
        if templates > len(self.pool.train):
            raise UserError(f"templates_per_group {templates} exceeds the {len(self.pool.train)} train templates of "
                            f"{self.pool.name}: lower templates_per_group to at most {len(self.pool.train)}, or use "
                            "a pool with more train templates")
        return replace(self, per_group=templates)

    def choose(self, row_id: Any, step: int, slot: int = 0) -> Template:
        """The template of row ``row_id`` at optimizer step ``step``; ``slot``: which of its group's
        `group_templates` (0 to ``per_group - 1``; a group with one template has only slot 0)."""
        if self.fixed is not None:
            return self.fixed
        if self.per_group == 1:
            return self.pool.draw(self.seed, row_id, self.position(step), self.weights)
        return self.group_templates(row_id, step)[slot]

    def group_templates(self, row_id: Any, step: int) -> list[Template]:
        """The ``per_group`` distinct train templates of row ``row_id``'s rollout group at step ``step``.

        Drawn without replacement, each draw a pure function of ``(seed, row id, position, k)``: by the draw weights
        when there are any (templates of zero weight come last, uniformly), uniformly otherwise. The first is the
        template a group of one template gets.
        """
        candidates = list(self.pool.train)
        weights = self.weights
        masses = [float(weights.get(t.id, 0.0)) for t in candidates] if weights is not None else None
        position = self.position(step)
        chosen = []
        for k in range(self.per_group):
            weighted = masses if masses is not None and sum(masses) > 0 else None
            index = draw_index(self.seed, row_id, position if k == 0 else f"{position}/{k}", len(candidates), weighted)
            chosen.append(candidates.pop(index))
            if masses is not None:
                masses.pop(index)
        return chosen

    def render(self, template: Template, fields: Mapping[str, object]) -> str:
        return self.pool.render(template, fields)

    @property
    def candidates(self) -> list[Template]:
        return [self.fixed] if self.fixed is not None else self.pool.train

    @property
    def evaluated(self) -> PromptPool:
        """The pool of evaluation during training (``eval_pool``, or the held-out templates of ``pool``)."""
        pool = self.eval_pool if self.eval_pool is not None else self.pool.subset("heldout")
        if not pool.templates:
            raise UserError(f"{self.pool.name} has no held-out templates to evaluate on: set eval_templates to train, "
                            f"all or a pool file")
        return pool

    def eval_prompt_text(self, row: Mapping[str, Any]) -> tuple[Template, str]:
        """The template of an eval row (its ``paft_eval_template`` column) and the text it renders."""
        pool = self.evaluated
        template = pool.get(row[EVAL_TEMPLATE_COLUMN])
        return template, pool.render(template, example_fields(row))


def build_chooser(args, task: Task) -> TemplateChooser:
    """Load and validate the pool named by ``args`` and build the chooser (fails before any model is loaded)."""
    if args.template_draw == "fixed":
        pool = PromptPool([Template("fixed", args.fixed_template, "train", "user")], name="fixed_template")
        pool = pool.with_aliases(_aliases(args)).validate(task)
        return TemplateChooser(pool, _seed(args), args.template_every, "fixed", pool.templates[0])
    pool = load_task_pool(task, args.pool, _aliases(args), drop_duplicates=args.drop_duplicate_templates)
    fixed = None
    if args.template_draw == "top":
        if args.template_id not in {t.id for t in pool.train}:
            ids = [t.id for t in pool.train]
            raise UserError(f"template_id {args.template_id!r} is not a train template of {pool.name}; choose one "
                            f"of {', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''}")
        fixed = pool.get(args.template_id)
    return TemplateChooser(pool, _seed(args), args.template_every, args.template_draw, fixed)


def _aliases(args):
    from ..tasks import parse_field_aliases

    return parse_field_aliases(args.field_aliases)


def _seed(args) -> int:
    return int(args.seed if args.template_seed is None else args.template_seed)


def resolve_task(args) -> Task:
    return get_task(args.task).with_answer_style(args.mc_answer_style)


def build_dataset(task: Task, rows: datasets.Dataset) -> datasets.Dataset:
    """Add what the trainers need to ``rows``: the template fields (JSON), ``gold`` (and ``options`` for
    multiple choice) for the rewards, and ``target``, the reference completion for SFT."""

    def convert(row):
        example = task.example(row)
        record = {FIELDS_COLUMN: json.dumps(example.fields, ensure_ascii=False), "gold": example.gold,
                  "target": example.target}
        if task.is_multiple_choice:
            record["options"] = list(example.options or [])
        return record

    return rows.map(convert, desc="task fields")


def load_training_dataset(args, task: Task) -> datasets.Dataset:
    rows = load_rows(task, data=args.data, split=args.data_split, limit=args.data_limit, seed=int(args.seed))
    if len(rows) == 0:
        raise UserError(f"the dataset for task {task.name!r} has no rows")
    return build_dataset(task, rows)


def example_fields(row: Mapping[str, Any]) -> dict[str, str]:
    return json.loads(row[FIELDS_COLUMN])


# ---------------------------------------------------------------------------- evaluation during training
def load_eval_pool(args, task: Task) -> PromptPool:
    """The templates of evaluation during training, chosen as `paft-rl eval` chooses them (`eval_templates`)."""
    return eval_templates(task, args.eval_templates, _aliases(args), args.pool,
                          drop_duplicates=args.drop_duplicate_templates, option="eval_templates")


def load_eval_dataset(args, task: Task) -> datasets.Dataset:
    """The eval rows of evaluation during training (``eval_data``, or the task's eval split of ``data``)."""
    data = args.eval_data or args.data
    if args.eval_data is None and args.data is not None and Path(args.data).is_file():
        raise UserError(f"evaluation during training needs held-out rows and {args.data} is one file (no eval "
                        f"split): set eval_data FILE, or eval_strategy: no")
    rows = load_rows(task, data=data, split=args.eval_data_split or task.eval_split, limit=args.eval_data_limit,
                     seed=int(args.seed))
    if len(rows) == 0:
        raise UserError(f"the eval dataset for task {task.name!r} has no rows")
    return build_dataset(task, rows)


def expand_for_eval(dataset: datasets.Dataset, pool: PromptPool) -> datasets.Dataset:
    """Each eval row once per eval template (template-major), the template id in a column, so every evaluation
    scores the same (row, template) pairs whatever order the eval sampler takes."""
    if EVAL_TEMPLATE_COLUMN in dataset.column_names:
        return dataset
    return datasets.concatenate_datasets(
        [dataset.add_column(EVAL_TEMPLATE_COLUMN, [t.id] * len(dataset)) for t in pool.templates])


def template_summary(values: Mapping[str, float], name: str, worst) -> dict[str, float]:
    """Per-template values plus their mean, worst (``worst``: `min` for rewards, `max` for losses) and std."""
    metrics = {f"paft/{name}_by_template/{template_id}": value for template_id, value in sorted(values.items())}
    if values:
        metrics[f"paft/{name}_template_mean"] = statistics.fmean(values.values())
        metrics[f"paft/{name}_template_worst"] = worst(values.values())
        metrics[f"paft/{name}_template_std"] = statistics.pstdev(values.values())
    return metrics


# ---------------------------------------------------------------------------- pre-flight checks
def check_fields_available(chooser: TemplateChooser, dataset: datasets.Dataset) -> None:
    """Every placeholder a candidate template uses must be a field of the examples (checked on the first row)."""
    fields = example_fields(dataset[0])
    offered = set(fields) | set(chooser.pool.aliases)
    for template in chooser.candidates:
        missing = [name for name in placeholders(template.text) if name not in offered]
        if missing:
            raise UserError(f"template {template.id!r} uses field(s) {', '.join(missing)} that the dataset does not "
                            f"provide (fields: {', '.join(sorted(fields))}); fix the pool, pass field_aliases "
                            f"NAME=FIELD, or use data with those columns")


def longest_prompt_tokens(chooser: TemplateChooser, dataset: datasets.Dataset, tokenizer, conversational: bool,
                          system_prompt: str | None, sample: int = 256) -> tuple[int, str, Any]:
    """An estimate of the longest prompt in tokens: for each of up to ``sample`` rows (the longest by field
    text), the candidate template that is longest for the first of them. Returns (tokens, template id, row id)."""
    lengths = [len(row) for row in dataset[FIELDS_COLUMN]]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])[:sample]
    first = example_fields(dataset[order[0]])

    def count(template: Template, fields) -> int:
        text = prompt_text(tokenizer, build_prompt(chooser.render(template, fields), conversational, system_prompt))
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    widest = max(chooser.candidates, key=lambda t: count(t, first))
    best = (0, widest.id, None)
    for index in order:
        row = dataset[index]
        tokens = count(widest, example_fields(row))
        if tokens > best[0]:
            best = (tokens, widest.id, row.get("row_id", index))
    return best


def existing_checkpoints(output_dir: str) -> list[Path]:
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if re.fullmatch(r"checkpoint-\d+", p.name))


# What a finished training leaves in output_dir (`Trainer.save_model`): a full model or a PEFT adapter.
FINISHED_MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin",
                        "config.json", "adapter_config.json")


def finished_model_files(output_dir: str | Path) -> list[str]:
    """The files of a saved model (or adapter) directly in ``output_dir``."""
    folder = Path(output_dir)
    return [name for name in FINISHED_MODEL_FILES if (folder / name).is_file()]


def check_output_dir(output_dir: str, resume: Any, overwrite: bool) -> None:
    """Refuse an output_dir that cannot be written, and one holding an earlier run (its checkpoints, or the model it
    saved when it finished), unless asked to resume or overwrite: a new run never mixes with, nor silently
    replaces, an old one."""
    check_output(output_dir, "output_dir")
    if resume or overwrite:
        return
    checkpoints = [p.name for p in existing_checkpoints(output_dir)]
    if checkpoints:
        raise UserError(f"output_dir {output_dir} already holds {', '.join(checkpoints[:3])}"
                        f"{' ...' if len(checkpoints) > 3 else ''}: pass --resume_from_checkpoint true to continue "
                        f"that run, --overwrite true to replace it, or choose another output_dir")
    finished = finished_model_files(output_dir)
    if finished:
        raise UserError(f"output_dir {output_dir} already holds a trained model ({', '.join(finished[:3])}): pass "
                        "--overwrite true to replace it, or choose another output_dir")


# ---------------------------------------------------------------------------- GRPO generation cycles and resume
def generation_cycle(args) -> tuple[int, int]:
    """GRPO's generation cycle: (micro-batches from one generation, micro-batches per optimizer step).

    TRL generates once every ``steps_per_generation x num_iterations`` micro-batches and trains on slices of that
    buffer; a cycle can span several optimizer steps.
    """
    return args.steps_per_generation * args.num_iterations, args.gradient_accumulation_steps


def cycle_start_step(micro_step: int, cycle: int, accumulation: int) -> int:
    """The optimizer step at which the generation cycle holding micro-batch ``micro_step`` starts."""
    return (micro_step // cycle) * cycle // accumulation


def safe_resume_every(args) -> int:
    """Checkpoints at multiples of this many optimizer steps resume exactly (1: every step is safe).

    A checkpoint inside a cycle is regenerated on resume (TRL does not save its buffer). Its (row, template)
    pairs come back, since templates follow the cycle's start; which rows each remaining step trains on comes
    back only when every optimizer step uses the whole buffer (``gradient_accumulation_steps`` a multiple of
    ``steps_per_generation``), since the regenerated buffer is shuffled anew.
    """
    cycle, accumulation = generation_cycle(args)
    if accumulation % args.steps_per_generation == 0:
        return 1
    return cycle // math.gcd(cycle, accumulation)


def warn_unsafe_save_steps(args) -> None:
    """Say at the start, not at resume time, when periodic checkpoints will fall inside generation cycles."""
    every = safe_resume_every(args)
    if args.save_strategy == "steps" and every > 1 and args.save_steps % every:
        logger.warning("paft-rl: save_steps %s puts checkpoints inside GRPO generation cycles, which cannot be "
                       "resumed exactly; use a multiple of %d", args.save_steps, every)


def checkpoint_step(checkpoint: str | Path) -> int | None:
    state = Path(checkpoint) / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text())["global_step"])
    match = re.fullmatch(r"checkpoint-(\d+)", Path(checkpoint).name)
    return int(match.group(1)) if match else None


def check_resume_point(args, resume: Any) -> None:
    """GRPO: refuse a checkpoint saved inside a generation cycle whose data order TRL cannot restore."""
    from trl import GRPOConfig

    if not resume or not isinstance(args, GRPOConfig):
        return
    every = safe_resume_every(args)
    if every == 1:
        return
    checkpoint = max(existing_checkpoints(args.output_dir), key=checkpoint_step, default=None) if resume is True \
        else Path(resume)
    step = checkpoint_step(checkpoint) if checkpoint is not None else None
    if step is None or step % every == 0:
        return
    cycle, accumulation = generation_cycle(args)
    raise UserError(f"{checkpoint} was saved at step {step}, inside a generation cycle ({cycle} micro-batches = "
                    f"steps_per_generation x num_iterations, {accumulation} per optimizer step) that TRL regenerates "
                    f"on resume and trains in another order: resume from a checkpoint at a multiple of {every} steps "
                    f"(save_steps: a multiple of {every})")


# ---------------------------------------------------------------------------- SFT data options


def check_sft_data_options(args, conversational: bool) -> None:
    """SFT: refuse TRL data options that cannot apply to prompts rendered from templates (before the model loads)."""
    from trl import SFTConfig

    if not isinstance(args, SFTConfig):
        return
    if args.chat_template_path is not None:
        # TRL would install it after the prompts were checked and on a tokenizer the collator may not hold.
        raise UserError("chat_template_path is not supported by paft-rl sft: put the chat template in the model's "
                        "tokenizer (tokenizer_config.json or chat_template.jinja) and drop chat_template_path")
    if args.assistant_only_loss and not conversational:
        raise UserError("assistant_only_loss needs chat prompts (an assistant turn to train on): set prompt_format: "
                        "chat with a tokenizer that has a chat template, or use completion_only_loss (the default)")
    if (args.packing or args.eval_packing) and args.max_length is None:
        raise UserError("packing packs examples into rows of max_length tokens: set max_length")


def reward_functions(names: Sequence[str] | None, task: Task) -> list:
    """The reward callables for ``names`` (default: the task's reward): registry names or dotted import paths."""
    import rewards

    chosen = list(names) if names else [task.reward]
    try:
        return [rewards.get_reward(name) for name in chosen]
    except ValueError as error:
        raise UserError(f"rewards: {error}") from None


def keep_unused_columns(args) -> None:
    """Set ``remove_unused_columns=False`` (prompts are rendered from ``row_id`` and the fields column, which the
    model's forward does not take), saying so once when it changes the user's setting."""
    if args.remove_unused_columns:
        logger.warning("paft-rl: remove_unused_columns set to False: the trainer renders each prompt from the row_id "
                       "and %s columns, which Trainer would otherwise drop", FIELDS_COLUMN)
    args.remove_unused_columns = False


def init_deepspeed_comm(args) -> None:
    """Initialise DeepSpeed's communication before a ZeRO-3 model is built.

    Under ZeRO-3, ``from_pretrained`` partitions parameters inside ``deepspeed.zero.Init``, which reads the
    world size before it initialises DeepSpeed's own communication; on CPU (``use_cpu``) Accelerate does not
    do it first, so every rank would believe it is alone. Doing it here, over the process group Accelerate
    already made, fixes the world size; it is a no-op when DeepSpeed is already initialised or not used.
    """
    if not args.deepspeed:
        return
    import torch.distributed

    if not torch.distributed.is_initialized():
        return
    import deepspeed
    import deepspeed.comm

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())
