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

import datasets
import torch
from accelerate.utils import gather_object
from trl import SFTTrainer, pack_dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import FusedCausalLMOutput

from prompt_pool import UserError

from ..configs import PaftSFTConfig
from ..formatting import PromptFormat, completion_text, encode_texts, prompt_text
from ..selection.adaptive import saving_callback
from .cycles import remove_replaced_checkpoints, train_resume
from .data import EVAL_TEMPLATE_COLUMN, example_fields, expand_for_eval, template_summary
from .draws import TemplateChooser
from .preflight import prepare_run

RAW_ROWS = "paft_rows"  # key of a not-yet-rendered batch


def set_pad_token(tokenizer, pad_token: str) -> None:
    """SFTConfig's ``pad_token``, which TRL applies only with its own collator."""
    if pad_token not in tokenizer.get_vocab():
        raise UserError(f"pad_token {pad_token!r} is not in the tokenizer's vocabulary: choose one of its tokens")
    tokenizer.pad_token = pad_token


def keep_raw_rows(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Data loader collate function: defer rendering until the optimizer step is known."""
    return {RAW_ROWS: rows}


@dataclass
class PaftSFTCollator:
    """Renders, tokenises and collates raw rows for one optimizer step, with TRL's SFT data options.

    Each example is rendered with its own template (drawn for the step it trains), tokenised as prompt +
    completion, truncated, optionally packed with the other examples of the micro-batch, and collated by TRL's
    `DataCollatorForLanguageModeling` (right padding, or one flattened padding-free row with ``position_ids``).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the model's tokenizer.
        chooser (`TemplateChooser`): which template each example gets.
        prompt_format (`PromptFormat`, defaults to plain text): chat (user message; chat template applied, after
            the system prompt if any) or plain text.
        max_length (`int`, *optional*): sequences are cut to this many tokens; with packing, the packed length.
        completion_column (`str`, defaults to `"target"`): the reference completion.
        completion_only_loss (`bool`, defaults to `True`): loss on completion tokens only (TRL's default for
            prompt-completion data); `False` trains on prompt tokens too.
        assistant_only_loss (`bool`, defaults to `False`): loss on the assistant turn only (chat prompts); the
            assistant turn is the completion, so it masks what ``completion_only_loss`` masks.
        truncation_mode (`str`, defaults to `"keep_start"`): ``keep_start`` or ``keep_end`` (unused when packing).
        packing (`bool`, defaults to `False`): pack the micro-batch's examples into rows of ``max_length``.
        packing_strategy (`str`, defaults to `"bfd"`): TRL's ``bfd``, ``bfd_split`` or ``wrapped``.
        padding_free (`bool`, defaults to `False`): one flattened row per micro-batch (implied by bfd packing).
        pad_to_multiple_of (`int`, *optional*): pad lengths to a multiple of this.
    """

    tokenizer: Any
    chooser: TemplateChooser
    prompt_format: PromptFormat = PromptFormat()
    max_length: int | None = None
    completion_column: str = "target"
    completion_only_loss: bool = True
    assistant_only_loss: bool = False
    truncation_mode: str = "keep_start"
    packing: bool = False
    packing_strategy: str = "bfd"
    padding_free: bool = False
    pad_to_multiple_of: int | None = None

    def apply_options(self, args) -> None:
        """Take the data options of an `SFTConfig` (what TRL's own collator and data preparation would read)."""
        self.max_length = args.max_length
        self.completion_only_loss = args.completion_only_loss is not False  # None: prompt-completion data, True
        self.assistant_only_loss = args.assistant_only_loss
        self.truncation_mode = args.truncation_mode
        self.packing = args.packing
        self.packing_strategy = args.packing_strategy
        self.padding_free = args.padding_free
        self.pad_to_multiple_of = args.pad_to_multiple_of

    def texts(self, rows: list[dict[str, Any]], step: int, evaluation: bool = False
              ) -> tuple[list[str], list[str], list[str]]:
        """Prompt texts, completion texts and template ids of ``rows`` at optimizer step ``step`` (with
        ``evaluation``: each eval row's own eval template)."""
        prompts, completions, template_ids = [], [], []
        for row in rows:
            if evaluation:
                template, text = self.chooser.eval_prompt_text(row)
            else:
                template = self.chooser.choose(row["row_id"], step)
                text = self.chooser.render(template, example_fields(row))
            prompt = self.prompt_format.build(text)
            prompts.append(prompt_text(self.tokenizer, prompt))
            completions.append(completion_text(self.tokenizer, prompt, str(row[self.completion_column])))
            template_ids.append(template.id)
        return prompts, completions, template_ids

    def examples(self, rows: list[dict[str, Any]], step: int, packing: bool, evaluation: bool = False
                 ) -> list[dict[str, list[int]]]:
        """Token ids and labels (-100 where no loss is taken) of each row, truncated unless packed."""
        prompts, completions, _ = self.texts(rows, step, evaluation)
        masked = self.completion_only_loss or self.assistant_only_loss
        cut = slice(None)
        if self.max_length is not None and not packing:
            cut = slice(-self.max_length, None) if self.truncation_mode == "keep_end" else slice(self.max_length)
        examples = []
        for prompt, completion in encode_texts(self.tokenizer, prompts, completions, self.prompt_format.chat):
            labels = ([-100] * len(prompt) if masked else list(prompt)) + completion
            examples.append({"input_ids": (prompt + completion)[cut], "labels": labels[cut]})
        return examples

    def __call__(self, rows: list[dict[str, Any]], step: int, packing: bool | None = None,
                 evaluation: bool = False) -> dict[str, torch.Tensor]:
        packing = self.packing if packing is None else packing
        if evaluation and packing:
            # Eval batches stay in row order, one padding-free row (the tokens bfd packing gives), so each
            # example's loss can be attributed to its template.
            examples = self.examples(rows, step, packing=False, evaluation=True)
            padding_free = True
        else:
            examples = self.examples(rows, step, packing, evaluation)
            if packing:
                examples = pack_examples(examples, self.max_length, self.packing_strategy)
            # As TRL: bfd packing is collated padding-free (its rows carry seq_lengths); wrapped rows are padded.
            padding_free = self.padding_free or (packing and self.packing_strategy in ("bfd", "bfd_split"))
        collate = DataCollatorForLanguageModeling(self.tokenizer.pad_token_id, padding_free=padding_free,
                                                  pad_to_multiple_of=self.pad_to_multiple_of)
        return collate(examples)


def pack_examples(examples: list[dict[str, list[int]]], max_length: int, strategy: str) -> list[dict[str, Any]]:
    """TRL's `pack_dataset` over one micro-batch: rows of at most ``max_length`` tokens with their seq_lengths."""
    quiet = not datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar per micro-batch would flood the log
    try:
        packed = pack_dataset(datasets.Dataset.from_list(examples), max_length, strategy)
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    return packed.to_list()


class PaftSFTTrainer(SFTTrainer):
    """`trl.SFTTrainer` training on completions of prompts rendered from pool templates.

    Used as TRL's: the task, its pool and how templates are drawn come from ``args``; the rows are the task's
    rows as the hub gives them, and their reference answers are the completions. Everything that can fail on bad
    input is checked before the model loads (`paft_rl.trainers.preflight.preflight`).

    ```python
    >>> from paft_rl import PaftSFTConfig, PaftSFTTrainer
    >>> trainer = PaftSFTTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct",
    ...                          args=PaftSFTConfig(task="synth_mc", output_dir="runs/mc", max_steps=40),
    ...                          train_dataset=rows)
    >>> trainer.train()
    ```

    Args:
        model (`str` or `PreTrainedModel`): as for `SFTTrainer`.
        args (`PaftSFTConfig`): TRL's SFT options plus the pool options (task, pool, template draw, prompt format
            and system prompt, SAPO's adaptive draws).
        train_dataset (`datasets.Dataset` or `list[dict]`, *optional*): the task's rows (its columns, as the hub
            gives them). Defaults to the task's data as ``args`` names it; the first ``data_limit`` rows either way.
        eval_dataset (*optional*): rows of evaluation during training, each evaluated with every eval template.
            Defaults, when ``eval_strategy`` is not ``no``, to ``eval_data`` or the task's eval split.
        processing_class (*optional*): the tokenizer (default: the model's).
        peft_config (*optional*): PEFT's config, checked on the model's architecture before the model loads.
        **kwargs: passed to `SFTTrainer` (``callbacks``, ``optimizers``...).

    Each example is rendered and tokenised by a `collator_class` (`PaftSFTCollator`) when its batch is built, with
    the template drawn for the step it trains. SAPO's adaptive draw weights (``template_draw: sapo``, in
    ``adaptive``) are rescored at the first step and every ``sapo_every`` steps after, drawn by from the first
    step, saved into every checkpoint and restored on resume.
    """

    collator_class = PaftSFTCollator

    def __init__(self, model, args: PaftSFTConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None, peft_config=None, **kwargs):
        inputs = prepare_run(args, PaftSFTConfig, model, tokenizer=processing_class, train_dataset=train_dataset,
                             eval_dataset=eval_dataset, peft_config=peft_config)
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        self.task = inputs.task
        self.adaptive = inputs.adaptive
        self.paft_collator = self.collator_class(inputs.tokenizer, inputs.chooser, inputs.prompt_format)
        self.paft_collator.apply_options(args)
        if args.pad_token is not None:
            set_pad_token(inputs.tokenizer, args.pad_token)
        train_dataset, eval_dataset = inputs.dataset, inputs.eval_dataset
        if eval_dataset is not None:  # every eval row with every eval template (held-out by default)
            eval_dataset = expand_for_eval(eval_dataset, inputs.chooser.evaluated)
        self._paft_eval_losses: dict[str, list[float]] = {}
        self._paft_eval_batch: tuple[dict, list[str]] | None = None
        if args.shuffle_dataset:  # as TRL's dataset preparation, which skip_prepare_dataset turns off
            train_dataset = train_dataset.shuffle(seed=args.seed)
            eval_dataset = eval_dataset.shuffle(seed=args.seed) if eval_dataset is not None else None
        # The collator packs, flattens and masks (templates are drawn per step, so TRL cannot pre-pack the data);
        # TRL refuses a custom collator with these set, so it sees them off while it builds itself.
        handled = {name: getattr(args, name) for name in ("packing", "padding_free", "assistant_only_loss")}
        for name in handled:
            setattr(args, name, False)
        try:
            super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                             data_collator=keep_raw_rows, processing_class=inputs.tokenizer,
                             peft_config=inputs.peft_config, **kwargs)
        finally:
            for name, value in handled.items():
                setattr(args, name, value)
        if self.adaptive is not None:
            self.add_callback(saving_callback(self.adaptive))

    @property
    def chooser(self) -> TemplateChooser:
        return self.paft_collator.chooser

    def train(self, resume_from_checkpoint=None, **kwargs):
        """TRL's training; ``resume_from_checkpoint`` defaults to the config's (``true``: the last checkpoint in
        ``output_dir``). With ``overwrite`` and no resume, the old run's checkpoints are removed first."""
        resume = train_resume(self, resume_from_checkpoint)
        if self.adaptive is not None:
            self.adaptive.restore(self.args.output_dir, resume)
        remove_replaced_checkpoints(self, resume)
        return super().train(resume_from_checkpoint=resume, **kwargs)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # Called once per optimizer step, before its micro-batches run: global_step is the step they train.
        if self.adaptive is not None:
            self.adaptive.maybe_update(self.model, self.state.global_step)
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(self._render_batch(next(epoch_iterator), training=True))
            except StopIteration:
                break
        return batches, self._get_num_items_in_batch(batches, device)

    def _render_batch(self, batch, training: bool):
        if not (isinstance(batch, dict) and RAW_ROWS in batch):
            return batch
        if training:
            return self.paft_collator(batch[RAW_ROWS], self.state.global_step)
        packing = self.args.packing if self.args.eval_packing is None else self.args.eval_packing
        rows = batch[RAW_ROWS]
        rendered = self.paft_collator(rows, self.state.global_step, packing=packing, evaluation=True)
        self._paft_eval_batch = (rendered, [row[EVAL_TEMPLATE_COLUMN] for row in rows])
        return rendered

    def _prepare_inputs(self, inputs):
        # Evaluation batches arrive here still raw (they do not go through get_batch_samples).
        return super()._prepare_inputs(self._render_batch(inputs, training=False))

    # ------------------------------------------------------------------ eval loss per template
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        captured = []
        handle = model.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            result = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        finally:
            handle.remove()
        fused = [output for output in captured if isinstance(output, FusedCausalLMOutput)]
        if fused and self._paft_eval_batch is not None:
            self._record_eval_losses(fused[0], *self._paft_eval_batch)
        self._paft_eval_batch = None
        return result

    def _record_eval_losses(self, outputs, batch: dict, template_ids: list[str]) -> None:
        """Add each example's summed token loss and token count to its template's totals."""
        nll = (-outputs.log_probs.detach().float() * outputs.label_mask).cpu()
        mask = outputs.label_mask.float().cpu()
        if "attention_mask" in batch:  # one example per row
            sums, counts = nll.sum(1), mask.sum(1)
        else:  # one padding-free row: examples restart their position ids at 0
            example = ((batch["position_ids"][0] == 0).cumsum(0) - 1)[1:].clamp(max=len(template_ids) - 1).cpu()
            sums = torch.zeros(len(template_ids)).index_add_(0, example, nll[0])
            counts = torch.zeros(len(template_ids)).index_add_(0, example, mask[0])
        for template_id, total, count in zip(template_ids, sums.tolist(), counts.tolist(), strict=True):
            totals = self._paft_eval_losses.setdefault(template_id, [0.0, 0.0])
            totals[0] += total
            totals[1] += count

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        """TRL's evaluation, plus the token-weighted loss of each eval template and their mean, worst and std."""
        self._paft_eval_losses = {}
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        totals: dict[str, list[float]] = {}
        for losses in gather_object([self._paft_eval_losses]):
            for template_id, (total, count) in losses.items():
                merged = totals.setdefault(template_id, [0.0, 0.0])
                merged[0] += total
                merged[1] += count
        means = {t: total / count for t, (total, count) in totals.items() if count}
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in template_summary(means, "loss", max).items()})
        return output


__all__ = ["PaftSFTCollator", "PaftSFTTrainer", "keep_raw_rows"]
