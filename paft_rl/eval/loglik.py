"""Multiple-choice scoring by option log-likelihood (``paft-rl eval --scoring loglik``).

This is how lm-evaluation-harness scores PIQA, HellaSwag and ARC by default (its ``acc``): the model reads
the prompt and each option's text is scored by the summed log-probability of its tokens as the continuation;
the likeliest option is the answer. Nothing is generated, so an answer can never be unreadable, and a model
too small to follow the answer format still gets a meaningful score. The prompt is the very text generation
would see (the template, then the chat template); the answer is recorded as the chosen option's letter, so
the task's reward scores it like any generated answer.

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


def sequence_logliks(model, sequences: list[tuple[list[int], int]], pad_id: int) -> list[float]:
    """Summed log-probability of the last ``n`` tokens of each ``(ids, n)``, in one left-padded forward pass.

    Positions come from the attention mask, so each row is computed as it would be alone; only the logits of
    the scored positions are materialised.
    """
    import torch

    width = max(len(ids) for ids, _ in sequences)
    keep = max(n for _, n in sequences) + 1
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, (ids, _) in enumerate(sequences):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        attention_mask[row, width - len(ids):] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    device = model.device
    with torch.inference_mode():
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                       position_ids=position_ids.to(device), logits_to_keep=keep).logits
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # position i predicts token i + 1
    targets = input_ids[:, width - keep + 1:].to(device)
    token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return [float(token_logprobs[row, keep - 1 - n:].sum()) for row, (_, n) in enumerate(sequences)]


def score_choices(model, requests: Sequence[ChoiceRequest], batch_size: int, max_batch_tokens: int, pad_id: int,
                  on_batch: Callable[[list[tuple[tuple[str, str], str, list[float], float]]], None]) -> None:
    """Score every option of every request; ``on_batch`` gets ``(key, chosen letter, logliks, seconds)``."""
    import time

    vocab_size = model.get_output_embeddings().weight.shape[0]
    for batch in choice_batches(requests, batch_size, max_batch_tokens, vocab_size):
        start = time.perf_counter()
        sequences = [(r.context_ids + c, len(c)) for r in batch for c in r.continuations]
        flat = sequence_logliks(model, sequences, pad_id)
        share = (time.perf_counter() - start) / len(batch)
        results, offset = [], 0
        for request in batch:
            logliks = flat[offset:offset + len(request.continuations)]
            offset += len(request.continuations)
            best = max(range(len(logliks)), key=logliks.__getitem__)  # ties: the first option, as argmax does
            results.append((request.key, LETTERS[best], logliks, share))
        on_batch(results)
