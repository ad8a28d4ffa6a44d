"""SAPO's signal: the task loss of each candidate template under the current model.

SAPO (arXiv 2606.01967) found that among paraphrased training prompts, the ones with the lowest loss on
the task's gold answers under the model *before* training forget less and transfer more. Scoring is a
forward pass only; every (template, row) pair goes through one length-sorted stream of batches, instead
of one evaluation loop per template, so padding and per-template overhead are small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prompt_pool import PromptPool, Template, UserError

from ..eval.models import config_context_length
from ..formatting import encode_example, resolve_conversational
from ..tasks import Example


@dataclass
class TemplateScore:
    """Loss of one template: ``loss`` is the mean over rows of each row's mean completion-token cross-entropy."""

    template_id: str
    loss: float
    tokens: int
    rows: int
    row_losses: list[float]
    row_tokens: list[int]

    def to_dict(self) -> dict:
        return {"template_id": self.template_id, "loss": self.loss, "tokens": self.tokens, "rows": self.rows}


def score_templates(model, tokenizer, pool: PromptPool, examples: Sequence[Example], n: int | None = 250,
                    templates: Sequence[Template] | None = None, batch_size: int = 16, max_length: int | None = None,
                    system_prompt: str | None = None, prompt_format: str = "auto") -> list[TemplateScore]:
    """Score every train template of ``pool`` by the model's loss on the gold completions.

    Args:
        model: a causal LM (a PEFT model is scored with its adapters active).
        tokenizer: its tokenizer.
        pool (`PromptPool`): candidate templates (its aliases apply).
        examples (`Sequence[Example]`): task examples; ``example.target`` is the completion scored.
        n (`int`, *optional*, defaults to `250`): score on the first ``n`` examples (SAPO's N); `None` = all.
        templates (`Sequence[Template]`, *optional*): which templates to score; default the pool's train split.
        batch_size (`int`, defaults to `16`): sequences per forward pass.
        max_length (`int`, *optional*): refuse sequences longer than this (default: the model's context).
        system_prompt (`str`, *optional*), prompt_format (`str`, defaults to `"auto"`): prompt formatting, as
            in training (`paft_rl.formatting`).

    Returns:
        `list[TemplateScore]` in template order.
    """
    templates = list(pool.train if templates is None else templates)
    examples = _check_inputs(templates, examples, n)
    limit = max_length or config_context_length(model.config, tokenizer)
    holder = "max_length" if max_length else "the model's context"
    conversational = resolve_conversational(prompt_format, tokenizer, system_prompt)
    sequences = []  # (length, template index, row index, ids, prompt length)
    for t, template in enumerate(templates):
        for r, example in enumerate(examples):
            rendered = pool.render(template, example.fields)
            ids, n_prompt = encode_example(tokenizer, rendered, example.target, conversational, system_prompt)
            if limit and len(ids) > limit:
                raise UserError(f"template {template.id!r} with row {r} makes {len(ids)} tokens, more than "
                                f"{holder} ({limit}); shorten the template or lower n")
            sequences.append((len(ids), t, r, ids, n_prompt))
    sums, counts = _completion_losses(model, tokenizer, sequences, batch_size, len(templates), len(examples))
    scores = []
    for t, template in enumerate(templates):
        row_losses = (sums[t] / counts[t]).tolist()
        scores.append(TemplateScore(template.id, float(sum(row_losses) / len(row_losses)), int(counts[t].sum()),
                                    len(examples), row_losses, [int(c) for c in counts[t].tolist()]))
    return scores


def _check_inputs(templates: Sequence[Template], examples: Sequence[Example], n: int | None) -> list[Example]:
    if len(templates) < 2:
        raise UserError(f"SAPO needs at least 2 candidate templates to choose from, the pool has {len(templates)}; "
                        "add train templates")
    if n is not None and n <= 0:
        raise UserError(f"n must be a positive number of rows, got {n}")
    if n is not None and n > len(examples):
        raise UserError(f"n = {n} but the data has only {len(examples)} rows; lower n or pass more data")
    examples = list(examples if n is None else examples[:n])
    missing = [i for i, e in enumerate(examples) if not str(e.target or "").strip()]
    if missing:
        raise UserError(f"{len(missing)} row(s) have no gold answer to score (first: row {missing[0]}); "
                        "SAPO's loss needs the reference answer of every row")
    return examples


@torch.inference_mode()
def _completion_losses(model, tokenizer, sequences, batch_size, n_templates, n_rows):
    """Sum of completion-token cross-entropy and token count per (template, row).

    Batches are left-padded so every completion ends at the right edge; the model then only computes
    logits for the last ``k`` positions (``logits_to_keep``), which skips the vocabulary projection for
    the prompt tokens, where no loss is taken: for a small model that projection is a large share of the work.
    """
    sums = torch.zeros(n_templates, n_rows, dtype=torch.float64)
    counts = torch.zeros(n_templates, n_rows, dtype=torch.float64)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ordered = sorted(sequences, key=lambda s: s[0])  # similar lengths together: little padding
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start:start + batch_size]
        width = batch[-1][0]
        keep = max(length - n_prompt for length, _, _, _, n_prompt in batch) + 1
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), keep), -100, dtype=torch.long)
        for i, (length, _, _, ids, n_prompt) in enumerate(batch):
            input_ids[i, width - length:] = torch.tensor(ids)
            attention[i, width - length:] = 1
            labels[i, keep - (length - n_prompt):] = torch.tensor(ids[n_prompt:])
        # Explicit positions make a left-padded row see the same positions as an unpadded one.
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                       position_ids=positions.to(device), logits_to_keep=keep).logits.float()
        # logits[:, j] predicts the token after position width-keep+j, i.e. labels[:, j+1].
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
        token_loss = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100,
            reduction="none",
        ).view(shift_labels.shape)
        mask = shift_labels != -100
        per_seq_sum = (token_loss * mask).sum(dim=1).double().cpu()
        per_seq_count = mask.sum(dim=1).double().cpu()
        for i, (_, t, r, _, _) in enumerate(batch):
            sums[t, r] = per_seq_sum[i]
            counts[t, r] = per_seq_count[i]
    model.train(was_training)
    return sums, counts


def pick_template(scores: Sequence[TemplateScore], rule: str = "lowest") -> TemplateScore:
    """SAPO's rule: the lowest loss; ``highest`` gives the paper's pessimal control."""
    if rule not in ("lowest", "highest"):
        raise UserError(f"--pick must be 'lowest' or 'highest', got {rule!r}")
    chooser = min if rule == "lowest" else max
    return chooser(scores, key=lambda s: (s.loss, s.template_id))

