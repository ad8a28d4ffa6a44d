"""PAFT for GRPO: every rollout group is prompted with a template drawn from the train pool (or, with
``group_templates: mixed``, with m distinct templates of it).

TRL's `RepeatSampler` hands each dataset row to the trainer ``num_generations`` times, spread over the
processes. Before TRL sees a generation batch we rebuild each input's ``prompt`` from its fields and the
template chosen for ``(seed, row_id, step // K)``, ``step`` being the optimizer step at which the generation
cycle starts (a cycle of ``steps_per_generation x num_iterations`` micro-batches can span several steps). Every
copy of a row, on every rank, computes the same three numbers, so all completions of a group share one prompt
string: what TRL's vLLM server mode assumes when it samples a whole group from the group's first prompt. The
rewrite happens before TRL's generation dispatch, so HF generation, vLLM colocate and vLLM server all receive the
rewritten prompts.

Mixed groups: the template of a copy is also a function of its place in the group (`group_slots`), in blocks of
G/m consecutive copies, so the server branch is asked for G/m completions of each of a group's m prompts
(`_generate_single_turn`). TRL's advantage still takes each group of G completions as one baseline.

The reward functions receive the dataset columns (``gold``, ``options``...) but never the template id; the
id is logged per completion in TRL's completions table and the mean reward per template as a metric. Only the
answer format the template declared travels, in the ``answer_format`` column, for the ``template_format`` reward.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from ..configs import PaftGRPOConfig
from ..precision import announce
from ..selection.adaptive import saving_callback
from .cycles import (
    check_resume_point,
    cycle_start_step,
    generation_cycle,
    remove_replaced_checkpoints,
    train_resume,
    warn_unsafe_save_steps,
)
from .data import ANSWER_FORMAT_COLUMN, example_fields, expand_for_eval, template_summary
from .preflight import prepare_run

TEMPLATE_METRIC = "paft/reward_by_template/"


class PaftGRPOTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` whose prompts are rendered from pool templates, one template per rollout group.

    Used as TRL's: the task, its pool and how templates are drawn come from ``args``; the rows are the task's
    rows as the hub gives them. Everything that can fail on bad input is checked before the model loads
    (`paft_rl.trainers.preflight.preflight`).

    ```python
    >>> from paft_rl import PaftGRPOConfig, PaftGRPOTrainer
    >>> trainer = PaftGRPOTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", args=PaftGRPOConfig(task="gsm8k", ...),
    ...                           train_dataset=rows)
    >>> trainer.train()
    ```

    Args:
        model (`str` or `PreTrainedModel`): as for `GRPOTrainer`.
        reward_funcs (*optional*): as for `GRPOTrainer` (the template never reaches them). Defaults to the rewards
            ``args.rewards`` names, or the task's own reward.
        args (`PaftGRPOConfig`): TRL's GRPO options plus the pool options (task, pool, template draw, prompt
            format and system prompt, mixed groups, SAPO's adaptive draws).
        train_dataset (`datasets.Dataset` or `list[dict]`, *optional*): the task's rows (its columns, as the hub
            gives them). Defaults to the task's data as ``args`` names it (``data``, ``data_split``); the first
            ``data_limit`` rows either way.
        eval_dataset (*optional*): rows of evaluation during training, each evaluated with every eval template
            (``eval_templates``: the pool's held-out ones by default). Defaults, when ``eval_strategy`` is not
            ``no``, to ``eval_data`` or the task's eval split.
        processing_class (*optional*): the tokenizer (default: the model's).
        peft_config (*optional*): PEFT's config, checked on the model's architecture before the model loads.
        **kwargs: passed to `GRPOTrainer` (``callbacks``, ``optimizers``...).

    SAPO's adaptive draw weights (``template_draw: sapo`` or ``sapo_reward``, in ``adaptive``) are updated at the
    first generation of every ``sapo_every`` steps (``sapo_reward``: from the rollout rewards), drawn by from the
    first step, saved into every checkpoint and restored on resume.
    """

    def __init__(self, model, reward_funcs=None, args: PaftGRPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, peft_config=None, **kwargs):
        inputs = prepare_run(args, PaftGRPOConfig, model, tokenizer=processing_class, train_dataset=train_dataset,
                             eval_dataset=eval_dataset, reward_funcs=reward_funcs, peft_config=peft_config)
        note_text_answer_budget(inputs, args.max_completion_length)
        warn_unsafe_save_steps(args)
        self.task = inputs.task
        self.chooser = inputs.chooser
        self.adaptive = inputs.adaptive
        self.prompt_format = inputs.prompt_format
        train_dataset = self._with_placeholder_prompt(inputs.dataset)
        eval_dataset = inputs.eval_dataset
        if eval_dataset is not None:  # every eval row with every eval template (held-out by default)
            eval_dataset = self._with_placeholder_prompt(expand_for_eval(eval_dataset, self.chooser.evaluated))
        super().__init__(model=model, reward_funcs=inputs.reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=inputs.tokenizer,
                         peft_config=inputs.peft_config, **kwargs)
        if self.use_vllm:
            from .vllm_cpu import route_colocate_sync_through_reload

            route_colocate_sync_through_reload(self.vllm_generation)  # CPU engines repack weights (see there)
        if self.adaptive is not None:
            self.add_callback(saving_callback(self.adaptive))
        self._paft_group_template_ids: list[str] = []
        self._paft_template_rewards: dict[str, dict[str, list]] = {"train": {}, "eval": {}}
        self._paft_regenerated_cycle = False  # set while a resumed run regenerates a cycle SAPO already saw

    def _with_placeholder_prompt(self, dataset):
        """TRL wants a ``prompt`` column; it is overwritten per generation, so any valid prompt will do."""
        if "prompt" in dataset.column_names:
            dataset = dataset.remove_columns("prompt")
        template = self.chooser.candidates[0]

        def placeholder(row):
            return {"prompt": self.prompt_format.build(self.chooser.render(template, example_fields(row)))}

        return dataset.map(placeholder, desc="placeholder prompts")

    # ------------------------------------------------------------------ the rewrite
    def render_inputs(self, inputs: list[dict[str, Any]], step: int) -> tuple[list[dict[str, Any]], list[str]]:
        """Rebuild ``prompt`` of each input for optimizer step ``step`` (eval rows: their eval template), and set
        its ``answer_format`` column to what that template declares; return the inputs and template ids."""
        rendered, template_ids = [], []
        slots = self.group_slots(inputs) if self.model.training else [0] * len(inputs)
        for row, slot in zip(inputs, slots, strict=True):
            if self.model.training:
                template = self.chooser.choose(row["row_id"], step, slot)
                text = self.chooser.render(template, example_fields(row))
            else:
                template, text = self.chooser.eval_prompt_text(row)
            prompt = self.prompt_format.build(text)
            rendered.append({**row, "prompt": prompt, ANSWER_FORMAT_COLUMN: template.answer_format})
            template_ids.append(template.id)
        return rendered, template_ids

    def group_slots(self, inputs: list[dict[str, Any]]) -> list[int]:
        """Which of its group's templates each training input gets: its place in the group, in blocks of G/m.

        TRL's `RepeatSampler` yields each row G times in a row, and the processes get consecutive slices of every
        generation batch (rank 0's first), which holds whole groups: an input's place in its group is its index
        in the generation batch over all processes, modulo G. Every process computes the same, and a resumed run's
        sampler replays the same order, so each (row, place) keeps its template.
        """
        templates, generations = self.chooser.per_group, self.num_generations
        if templates == 1:
            return [0] * len(inputs)
        start = self.accelerator.process_index * len(inputs)
        places = [(start + index) % generations for index in range(len(inputs))]
        for index in range(1, len(inputs)):
            if places[index] and inputs[index]["row_id"] != inputs[index - 1]["row_id"]:
                raise RuntimeError("paft-rl: a generation batch does not hold each row's num_generations copies in a "
                                   "row; mixed template groups need TRL's RepeatSampler order")
        return [place // (generations // templates) for place in places]

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        # TRL's vLLM server branch asks for `num_generations` completions of every `num_generations`-th prompt. In a
        # mixed group each prompt repeats G/m times in a row: ask for that many of each. HF generation and colocated
        # vLLM generate one completion per prompt and ignore the count.
        if self.model.training and num_generations == self.num_generations:
            num_generations //= self.chooser.per_group
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor | Any]:
        step = self.generation_step()
        if self.adaptive is not None and self.model.training:
            self.adaptive.maybe_update(self.model, step)
        inputs, template_ids = self.render_inputs(inputs, step)
        self._paft_group_template_ids = template_ids
        self._log_completion_extra("template_id", template_ids)  # what reward functions' log_extra calls
        return super()._generate_and_score_completions(inputs)

    def generation_step(self) -> int:
        """The training position of this generation: the optimizer step its generation cycle starts at.

        A cycle (``steps_per_generation x num_iterations`` micro-batches) can span several optimizer steps; a run
        resumed inside it regenerates it, and must draw what the uninterrupted run drew at the cycle's start.
        """
        cycle, accumulation = generation_cycle(self.args)
        return cycle_start_step(self._step, cycle, accumulation)

    # ------------------------------------------------------------------ resume inside a generation cycle
    def train(self, resume_from_checkpoint=None, **kwargs):
        """TRL's training; ``resume_from_checkpoint`` defaults to the config's (``true``: the last checkpoint in
        ``output_dir``). With ``overwrite`` and no resume, the old run's checkpoints are removed first."""
        resume = train_resume(self, resume_from_checkpoint)
        check_resume_point(self.args, resume)
        if self.adaptive is not None:
            self.adaptive.restore(self.args.output_dir, resume)
        remove_replaced_checkpoints(self, resume)
        self._buffered_inputs = None  # a new train() call starts a new cycle (and re-reads the step, see below)
        return super().train(resume_from_checkpoint=resume, **kwargs)

    def _prepare_inputs(self, generation_batch):
        if self.model.training and self._buffered_inputs is None:
            # First batch of this train() call. TRL counts micro-batches (_step) from 0 even after a resume; put it
            # where the uninterrupted run was, so generations and buffer slices keep their schedule.
            cycle, accumulation = generation_cycle(self.args)
            self._step = self.state.global_step * accumulation
            self._paft_regenerated_cycle = self._step % cycle != 0  # SAPO saw this cycle's rewards before the save
            try:
                return super()._prepare_inputs(generation_batch)
            finally:
                self._paft_regenerated_cycle = False
        return super()._prepare_inputs(generation_batch)

    # ------------------------------------------------------------------ reward per template
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._log_reward_by_template(rewards_per_func)
        return rewards_per_func

    def _log_reward_by_template(self, rewards_per_func: torch.Tensor) -> None:
        """Accumulate this generation batch's weighted rewards per template, over all processes.

        A completion for which every reward function returned ``None`` (NaN in TRL) is unscorable: TRL leaves it
        out of its ``reward`` metric, and so do the per-template means and SAPO's running means. The means are
        per completion (sums and counts until the next log), not a mean of per-batch means.
        """
        template_ids = gather_object(list(self._paft_group_template_ids))  # same order as TRL's gather
        if len(template_ids) != rewards_per_func.size(0):
            return  # unexpected layout: skip rather than mislabel
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan  # as TRL: unscorable, not 0
        rewards = rewards.tolist()
        mode = "train" if self.model.training else "eval"
        if mode == "train" and self.adaptive is not None and not self._paft_regenerated_cycle:
            self.adaptive.observe_rewards(template_ids, rewards)
        totals = self._paft_template_rewards[mode]
        for template_id, reward in zip(template_ids, rewards, strict=True):
            if not math.isnan(reward):
                total = totals.setdefault(template_id, [0.0, 0])
                total[0] += reward
                total[1] += 1
        self._log_metric("paft/templates_in_batch", float(len(set(template_ids))))  # what log_metric calls

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training:  # evaluation adds its own per-template metrics (evaluation_loop)
            for template_id, (total, count) in sorted(self._paft_template_rewards["train"].items()):
                logs[TEMPLATE_METRIC + template_id] = total / count
            self._paft_template_rewards["train"].clear()
        super().log(logs, start_time)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        """TRL's evaluation, plus the mean reward of each eval template and their mean, worst and std."""
        self._paft_template_rewards["eval"].clear()
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        means = {t: total / count for t, (total, count) in self._paft_template_rewards["eval"].items()}
        summary = template_summary(means, "reward", min)
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in summary.items()})
        self._paft_template_rewards["eval"].clear()
        return output


def note_text_answer_budget(inputs, budget: int | None) -> None:
    """Say so when GRPO's completions cannot hold the longest option a text answer copies: those rows cannot be
    answered right, and their reward is 0 whatever the model learns."""
    from prompt_pool import short_value

    from ..tasks import text_answer_tokens

    if budget is None or not inputs.task.answers_with_text:
        return
    longest = text_answer_tokens(inputs.task, inputs.dataset["options"], inputs.tokenizer)
    if budget < longest[0]:
        announce(f"max_completion_length {budget} cuts text answers: option {short_value(longest[1])} is "
                 f"{longest[0]} tokens, so no completion can copy it whole (raise max_completion_length)")


__all__ = ["PaftGRPOTrainer", "TEMPLATE_METRIC"]
