"""PAFT for GRPO: every rollout group is prompted with a template drawn from the train pool.

TRL's `RepeatSampler` hands each dataset row to the trainer ``num_generations`` times, spread over the
processes. Before TRL sees a generation batch we rebuild each input's ``prompt`` from its fields and the
template chosen for ``(seed, row_id, global_step // K)``. Every copy of a row, on every rank, computes the same
three numbers, so all completions of a group share one prompt string: what TRL's vLLM server mode assumes when it
samples a whole group from the group's first prompt. The rewrite happens before TRL's generation dispatch, so HF
generation, vLLM colocate and vLLM server all receive the rewritten prompts.

The reward functions receive the dataset columns (``gold``, ``options``...) but never the template id; the
id is logged per completion in TRL's completions table and the mean reward per template as a metric.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from ..formatting import build_prompt
from .common import TemplateChooser, example_fields, init_deepspeed_comm

TEMPLATE_METRIC = "paft/reward_by_template/"


class PaftGRPOTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` whose prompts are rendered from pool templates, one template per rollout group.

    Args:
        model (`str` or `PreTrainedModel`): as for `GRPOTrainer`.
        reward_funcs: as for `GRPOTrainer` (the template never reaches them).
        args (`PaftGRPOConfig`): TRL's GRPO options plus the pool options.
        train_dataset (`datasets.Dataset`): rows with ``row_id`` and the ``paft_fields`` column
            (see `paft_rl.trainers.common.build_dataset`); a placeholder ``prompt`` column is added.
        chooser (`TemplateChooser`): which template each group gets.
        conversational (`bool`, defaults to `False`): render the template into a chat's user message.
        system_prompt (`str`, *optional*): system message of chat prompts.
        **kwargs: passed to `GRPOTrainer` (``processing_class``, ``peft_config``, ``callbacks``...).
    """

    def __init__(self, model, reward_funcs, args, train_dataset, chooser: TemplateChooser,
                 conversational: bool = False, system_prompt: str | None = None, eval_dataset=None, **kwargs):
        self.chooser = chooser
        self.conversational = conversational
        self.system_prompt = system_prompt
        train_dataset = self._with_placeholder_prompt(train_dataset)
        init_deepspeed_comm(args)
        args.remove_unused_columns = False  # the rewrite needs row_id and the fields column
        if eval_dataset is not None:
            eval_dataset = self._with_placeholder_prompt(eval_dataset)
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, **kwargs)
        if self.use_vllm:
            from .vllm_cpu import route_colocate_sync_through_reload

            route_colocate_sync_through_reload(self.vllm_generation)  # CPU engines repack weights (see there)
        self._paft_group_template_ids: list[str] = []

    def _with_placeholder_prompt(self, dataset):
        """TRL wants a ``prompt`` column; it is overwritten per generation, so any valid prompt will do."""
        if "prompt" in dataset.column_names:
            dataset = dataset.remove_columns("prompt")
        template = self.chooser.candidates[0]

        def placeholder(row):
            return {"prompt": build_prompt(self.chooser.render(template, example_fields(row)),
                                           self.conversational, self.system_prompt)}

        return dataset.map(placeholder, desc="placeholder prompts")

    # ------------------------------------------------------------------ the rewrite
    def render_inputs(self, inputs: list[dict[str, Any]], step: int) -> tuple[list[dict[str, Any]], list[str]]:
        """Rebuild ``prompt`` of each input for optimizer step ``step``; return the inputs and template ids."""
        rendered, template_ids = [], []
        for row in inputs:
            template = self.chooser.choose(row["row_id"], step)
            text = self.chooser.render(template, example_fields(row))
            rendered.append({**row, "prompt": build_prompt(text, self.conversational, self.system_prompt)})
            template_ids.append(template.id)
        return rendered, template_ids

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor | Any]:
        # global_step is the optimizer step being computed; it is the same on every rank and is restored on resume.
        if getattr(self, "sapo", None) is not None and self.model.training:
            self.sapo.maybe_update(self.model, self.state.global_step)
        inputs, template_ids = self.render_inputs(inputs, self.state.global_step)
        self._paft_group_template_ids = template_ids
        self._pending_extra_logs["template_id"].extend(template_ids)
        return super()._generate_and_score_completions(inputs)

    # ------------------------------------------------------------------ reward per template
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._log_reward_by_template(rewards_per_func)
        return rewards_per_func

    def _log_reward_by_template(self, rewards_per_func: torch.Tensor) -> None:
        """Mean weighted reward of this generation batch per template, over all processes."""
        template_ids = gather_object(list(self._paft_group_template_ids))  # same order as TRL's gather
        if len(template_ids) != rewards_per_func.size(0):
            return  # eval batch or unexpected layout: skip rather than mislabel
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1).tolist()
        mode = "train" if self.model.training else "eval"
        if mode == "train" and getattr(self, "sapo", None) is not None:
            self.sapo.observe_rewards(template_ids, rewards)
        by_template: dict[str, list[float]] = {}
        for template_id, reward in zip(template_ids, rewards, strict=True):
            by_template.setdefault(template_id, []).append(reward)
        for template_id, values in by_template.items():
            self._metrics[mode][TEMPLATE_METRIC + template_id].append(sum(values) / len(values))
        self._metrics[mode]["paft/templates_in_batch"].append(float(len(by_template)))


__all__ = ["PaftGRPOTrainer", "TEMPLATE_METRIC"]
