"""Multiple-choice scoring by option log-likelihood (``paft-rl eval --scoring loglik``).

This is how lm-evaluation-harness scores PIQA, HellaSwag and ARC by default (its ``acc``): the model reads
the prompt and each option's text is scored by the summed log-probability of its tokens as the continuation;
the likeliest option is the answer. Nothing is generated, so an answer can never be unreadable, and a model
too small to follow the answer format still gets a meaningful score. The prompt is the very text generation
would see (the template, then the chat template); the answer is recorded as the chosen option's letter, so
the task's reward scores it like any generated answer.

The prompt is read once per question, not once per option: one forward pass over the batch's prompts fills a
key/value cache, which is copied to each option's row, and a second pass reads only the options' tokens, so a
question with k options spares k - 1 passes over its prompt (bench/eval_speed.py --scoring loglik times it).

Continuations are tokenised the way the harness does it: the prompt and option are encoded together and the
option's tokens are what follows the prompt's, so a word that merges with the space before it is scored as
the tokenizer would write it. A space separates a plain prompt from its option (unless the prompt ends in
whitespace); a chat prompt already ends with the assistant turn's opening, and the option follows directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..tasks import LETTERS

LOGITS_BUDGET_BYTES = 256 * 2**20  # float32 logits kept per forward pass (rows x option tokens x vocabulary)


@dataclass(frozen=True)
class ChoiceRequest:
    """One question under one template: the prompt's token ids and each option's continuation ids."""

    key: tuple[str, str]
    context_ids: list[int]
    continuations: list[list[int]]

    @property
    def longest(self) -> int:
        return len(self.context_ids) + max(len(c) for c in self.continuations)


def option_delimiter(context: str, chat: bool) -> str:
    """What goes between prompt and option: nothing after a chat prompt or trailing whitespace, else a space."""
    return "" if chat or not context or context[-1].isspace() else " "


def continuation_ids(tokenizer, context: str, context_ids: list[int], option: str, chat: bool) -> list[int]:
    """Token ids of ``option`` as the continuation of ``context`` (whose own ids are ``context_ids``)."""
    text = option_delimiter(context, chat) + option
    whole = tokenizer(context + text, add_special_tokens=not chat)["input_ids"]
    if whole[:len(context_ids)] == context_ids and len(whole) > len(context_ids):
        return whole[len(context_ids):]
    # The option merged into the prompt's last token: score it tokenised on its own instead.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def choice_requests(tokenizer, cells: Sequence, prompts: dict, prompt_ids: dict, chat: bool) -> dict:
    """A `ChoiceRequest` per cell, keyed like the prompts."""
    requests = {}
    for cell in cells:
        key = (cell.template, cell.row)
        continuations = [continuation_ids(tokenizer, prompts[key], prompt_ids[key], option, chat)
                         for option in cell.options]
        requests[key] = ChoiceRequest(key, list(prompt_ids[key]), continuations)
    return requests


def choice_batches(requests: Sequence[ChoiceRequest], batch_size: int, max_batch_tokens: int,
                   vocab_size: int) -> list[list[ChoiceRequest]]:
    """Requests longest first, each with all its options in one batch: at most ``batch_size`` sequences,
    ``max_batch_tokens`` padded tokens and `LOGITS_BUDGET_BYTES` of logits a batch (a request never splits)."""
    batches: list[list[ChoiceRequest]] = []
    for request in sorted(requests, key=lambda r: r.longest, reverse=True):
        if batches:
            batch = [*batches[-1], request]
            rows = sum(len(r.continuations) for r in batch)
            keep = max(len(c) for r in batch for c in r.continuations) + 1
            fits = (rows <= batch_size and rows * batch[0].longest <= max_batch_tokens
                    and rows * keep * vocab_size * 4 <= LOGITS_BUDGET_BYTES)
            if fits:
                batches[-1].append(request)
                continue
        batches.append([request])
    return batches


def option_logliks(model, batch: Sequence[ChoiceRequest], pad_id: int) -> list[float]:
    """Summed log-probability of every option of every request in ``batch``, flat in request then option order.

    Pass 1 reads the prompts, left-padded, into a key/value cache and keeps the logits of their last position
    (which score each option's first token). Pass 2 reads the options' tokens, right-padded, one row per option
    over its prompt's cache rows; positions come from the attention masks, so each row is computed as it would be
    alone, and only the options' logits are materialised.
    """
    import torch

    device = model.device
    contexts = [request.context_ids for request in batch]
    options = [option for request in batch for option in request.continuations]
    owner = torch.tensor([i for i, request in enumerate(batch) for _ in request.continuations], device=device)
    context_ids, context_mask = padded(contexts, pad_id, left=True)
    option_ids, option_mask = padded(options, pad_id, left=False)
    context_ids, context_mask = context_ids.to(device), context_mask.to(device)
    option_ids, option_mask = option_ids.to(device), option_mask.to(device)
    with torch.inference_mode():
        first = model(input_ids=context_ids, attention_mask=context_mask,
                      position_ids=(context_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1)
        cache = first.past_key_values
        cache.batch_select_indices(owner)  # each option's row starts from its own prompt's cache
        mask = torch.cat([context_mask[owner], option_mask], dim=-1)
        positions = context_mask.sum(-1)[owner, None] + torch.arange(option_ids.shape[1], device=device)
        logits = model(input_ids=option_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=False).logits
        # Option token j is predicted by the prompt's last position (j = 0) or by option position j - 1.
        logits = torch.cat([first.logits[owner, -1:], logits[:, :-1]], dim=1)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        token_logprobs = logprobs.gather(-1, option_ids.unsqueeze(-1)).squeeze(-1) * option_mask
    return token_logprobs.sum(-1).tolist()


def padded(sequences: Sequence[list[int]], pad_id: int, left: bool):
    """``sequences`` as one padded id tensor and its attention mask, padded on the left or the right."""
    import torch

    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(sequences):
        span = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[row, span] = torch.tensor(ids)
        attention_mask[row, span] = 1
    return input_ids, attention_mask


def score_choices(model, requests: Sequence[ChoiceRequest], batch_size: int, max_batch_tokens: int, pad_id: int,
                  on_batch: Callable[[list[tuple[tuple[str, str], str, list[float], float]]], None]) -> None:
    """Score every option of every request; ``on_batch`` gets ``(key, chosen letter, logliks, seconds)``."""
    import time

    vocab_size = model.get_output_embeddings().weight.shape[0]
    for batch in choice_batches(requests, batch_size, max_batch_tokens, vocab_size):
        start = time.perf_counter()
        flat = option_logliks(model, batch, pad_id)
        share = (time.perf_counter() - start) / len(batch)
        results, offset = [], 0
        for request in batch:
            logliks = flat[offset:offset + len(request.continuations)]
            offset += len(request.continuations)
            best = max(range(len(logliks)), key=logliks.__getitem__)  # ties: the first option, as argmax does
            results.append((request.key, LETTERS[best], logliks, share))
        on_batch(results)
