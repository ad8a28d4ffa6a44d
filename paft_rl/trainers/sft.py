"""PAFT for supervised fine-tuning: each example is rendered with a template drawn from the train pool.

The dataset stays untokenised (``skip_prepare_dataset``): the data loader hands over raw rows, and the
collator renders and tokenises them when the trainer gathers the batches of an optimizer step
(`Trainer.get_batch_samples`). That is the one moment at which ``state.global_step`` is exactly the step the
batch trains (the data loader prefetches ahead of it), on every rank and after a resume. An example's
template is a pure function of ``(seed, row_id, global_step // K)``; loss is on completion tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl import SFTTrainer

from ..formatting import build_prompt, completion_text, prompt_text
from .common import TemplateChooser, example_fields, init_deepspeed_comm, keep_unused_columns

RAW_ROWS = "paft_rows"  # key of a not-yet-rendered batch


def keep_raw_rows(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Data loader collate function: defer rendering until the optimizer step is known."""
    return {RAW_ROWS: rows}


@dataclass
class PaftSFTCollator:
    """Renders, tokenises and pads raw rows for one optimizer step; labels are -100 outside the completion.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the model's tokenizer.
        chooser (`TemplateChooser`): which template each example gets.
        conversational (`bool`): prompt is a chat (user message; chat template applied) or plain text.
        system_prompt (`str`, *optional*): system message of chat prompts.
        max_length (`int`, *optional*): sequences are cut to this many tokens (keeping the start).
        completion_column (`str`, defaults to `"target"`): the reference completion.
    """

    tokenizer: Any
    chooser: TemplateChooser
    conversational: bool = False
    system_prompt: str | None = None
    max_length: int | None = None
    completion_column: str = "target"

    def texts(self, rows: list[dict[str, Any]], step: int) -> tuple[list[str], list[str], list[str]]:
        """Prompt texts, completion texts and template ids of ``rows`` at optimizer step ``step``."""
        prompts, completions, template_ids = [], [], []
        for row in rows:
            template = self.chooser.choose(row["row_id"], step)
            prompt = build_prompt(self.chooser.render(template, example_fields(row)), self.conversational,
                                  self.system_prompt)
            prompts.append(prompt_text(self.tokenizer, prompt))
            completions.append(completion_text(self.tokenizer, prompt, str(row[self.completion_column])))
            template_ids.append(template.id)
        return prompts, completions, template_ids

    def __call__(self, rows: list[dict[str, Any]], step: int) -> dict[str, torch.Tensor]:
        prompts, completions, _ = self.texts(rows, step)
        # Chat templates write their own special tokens; plain prompts get the tokenizer's usual ones.
        prompt_ids = self.tokenizer(prompts, add_special_tokens=not self.conversational)["input_ids"]
        completion_ids = self.tokenizer(completions, add_special_tokens=False)["input_ids"]
        sequences, labels = [], []
        for prompt, completion in zip(prompt_ids, completion_ids, strict=True):
            ids = (prompt + completion)[: self.max_length]
            sequences.append(ids)
            labels.append(([-100] * len(prompt) + completion)[: self.max_length])
        return self._pad(sequences, labels)

    def _pad(self, sequences: list[list[int]], labels: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids in sequences)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        label_ids = torch.full((len(sequences), width), -100, dtype=torch.long)
        for i, (ids, lab) in enumerate(zip(sequences, labels, strict=True)):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention_mask[i, : len(ids)] = 1
            label_ids[i, : len(lab)] = torch.tensor(lab)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_ids}


class PaftSFTTrainer(SFTTrainer):
    """`trl.SFTTrainer` training on completions of prompts rendered from pool templates.

    Args:
        model (`str` or `PreTrainedModel`): as for `SFTTrainer`.
        args (`PaftSFTConfig`): TRL's SFT options plus the pool options.
        train_dataset (`datasets.Dataset`): rows with ``row_id``, ``paft_fields`` and ``target``
            (see `paft_rl.trainers.common.build_dataset`).
        collator (`PaftSFTCollator`): renders and tokenises the rows of each optimizer step.
        **kwargs: passed to `SFTTrainer` (``processing_class``, ``peft_config``, ``callbacks``...).
    """

    def __init__(self, model, args, train_dataset, collator: PaftSFTCollator, eval_dataset=None, **kwargs):
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        keep_unused_columns(args)
        self.paft_collator = collator
        self.sapo = None  # SAPO's adaptive weights, attached by `paft_rl.trainers.setup.attach_adaptive_draws`
        init_deepspeed_comm(args)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=keep_raw_rows, **kwargs)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # Called once per optimizer step, before its micro-batches run: global_step is the step they train.
        if self.sapo is not None:
            self.sapo.maybe_update(self.model, self.state.global_step)
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(self._render_batch(next(epoch_iterator)))
            except StopIteration:
                break
        return batches, self._get_num_items_in_batch(batches, device)

    def _render_batch(self, batch):
        if isinstance(batch, dict) and RAW_ROWS in batch:
            batch = self.paft_collator(batch[RAW_ROWS], self.state.global_step)
        return batch

    def _prepare_inputs(self, inputs):
        # Evaluation batches arrive here still raw (they do not go through get_batch_samples).
        return super()._prepare_inputs(self._render_batch(inputs))


__all__ = ["PaftSFTCollator", "PaftSFTTrainer", "keep_raw_rows"]
