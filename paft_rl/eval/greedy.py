"""Greedy generation shaped for evaluation: tight prefill batches, one wide decode batch, finished rows dropped.

`generate` on a padded batch does two kinds of wasted work when answers are short and prompts vary in
length. Prefill pads every row to the longest prompt of the batch, and decoding runs until the batch's
longest answer ends, still computing the rows that already stopped. Each decode step also pays a fixed
cost (reading every weight once) that only a wide batch spreads thin, while prefill is fastest in
batches small enough to stay in the CPU caches.

So a wave of prompts is prefilled in small groups of nearly equal length (each reusing its template's
shared prefix cache), the groups' key/value caches are joined into one batch, and that batch decodes
greedily, dropping rows as they end. Positions come from the attention mask as in `generate`, so every
row computes what it would alone; the test suite checks the tokens equal `generate`'s.

Only models on `sdpa` attention whose cache is a plain `DynamicCache` of full-attention layers, and whose
generation config asks for nothing beyond argmax (no repetition penalty, forced or suppressed tokens), take
this path; `supports_wave_greedy` says which, and the backend uses `generate` for the rest.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

# Generation settings that change the logits before the argmax; a model whose generation config sets any
# of them goes through `generate`, which applies them.
LOGITS_SETTINGS = (
    "repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
    "bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id",
    "min_length", "min_new_tokens", "sequence_bias", "exponential_decay_length_penalty", "watermarking_config",
)

# A forward pass costs about as much as this many extra prompt tokens (measured on CPU with SmolLM2-135M:
# a one-row prefill runs at about 70 % of the batched token rate), so splitting a group pays off only
# when it saves more padding than that.
FORWARD_COST_TOKENS = 32


ATTENTION_NAME = "paft_grouped_sdpa"


def grouped_query_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """`sdpa` attention that, for a one-token query over a padded batch, folds each key/value head's query
    heads together instead of repeating the keys and values per query head.

    With a padding mask, transformers' `sdpa` attention copies every key and value once per query head of a
    group (SDPA's own grouped-query path refuses masks); in decoding that copy of the whole cache is most of
    the step's cost. The query heads of a group attend to the same keys at the same position, so they can
    stand as a group's rows of queries: the same dot products, no copy. Everything else goes to `sdpa`.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    foldable = (query.shape[2] == 1 and groups > 1 and attention_mask is not None and attention_mask.shape[1] == 1
                and kwargs.get("position_bias") is None and not kwargs.get("output_attentions", False))
    if not foldable:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    import torch

    batch, heads, _, dim = query.shape
    grouped = query.reshape(batch, key.shape[1], groups, dim)
    output = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask,
                                                              dropout_p=dropout, scale=scaling)
    return output.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def use_grouped_query_sdpa(model) -> None:
    """Switch a model on `sdpa` attention to `grouped_query_sdpa` (same results, no key/value copies)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    if model.config._attn_implementation != "sdpa":
        return
    AttentionInterface.register(ATTENTION_NAME, grouped_query_sdpa)
    AttentionMaskInterface.register(ATTENTION_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    model.set_attn_implementation(ATTENTION_NAME)


def supports_wave_greedy(model) -> bool:
    """Whether `WaveGreedy` computes exactly what `generate` would for ``model`` (greedy, no logits rules)."""
    import torch
    from transformers import GenerationConfig
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if getattr(model.config, "is_encoder_decoder", False):
        return False
    if model.config._attn_implementation not in ("sdpa", ATTENTION_NAME):
        return False  # other kernels (flash attention, eager) are not checked against `generate` here
    parameters = inspect.signature(model.forward).parameters
    if not {"position_ids", "past_key_values", "logits_to_keep"} <= set(parameters):
        return False
    defaults, configured = GenerationConfig(), model.generation_config
    if any(getattr(configured, name, None) != getattr(defaults, name, None) for name in LOGITS_SETTINGS):
        return False
    with torch.inference_mode():
        probe = torch.zeros((1, 2), dtype=torch.long, device=model.device)
        cache = model(probe, use_cache=True, logits_to_keep=1).past_key_values
    return type(cache) is DynamicCache and all(type(layer) is DynamicLayer for layer in cache.layers)


class PrefixCache:
    """The key/value cache of the latest shared prefix (a template's chat header and instructions), computed
    once and handed out as a copy per batch, since a batch's forward pass extends the cache it is given."""

    def __init__(self, model):
        self.model = model
        self._latest: tuple[tuple[int, ...], object] | None = None

    def for_batch(self, prefix: tuple[int, ...], rows: int):
        """A fresh cache holding ``prefix`` for each of ``rows`` rows."""
        import torch

        if self._latest is None or self._latest[0] != prefix:
            with torch.inference_mode():
                ids = torch.tensor([prefix], device=self.model.device)
                # No logits_to_keep: `generate`'s fallback serves models whose forward lacks it.
                self._latest = (prefix, self.model(ids, use_cache=True).past_key_values)
        cache = copy.deepcopy(self._latest[1])
        cache.batch_repeat_interleave(rows)
        return cache


@dataclass
class _Part:
    """A prefilled group: which wave rows it holds, their cache, attention mask and first new token."""

    rows: list[int]
    cache: object
    mask: object
    first: object


def split_by_padding(lengths: Sequence[int], max_tokens: int, forward_cost: int = FORWARD_COST_TOKENS) -> list[int]:
    """Cut points that split rows (sorted longest first) into groups with the least padded work.

    A group of ``n`` rows led by a row of length ``w`` costs ``n * w + forward_cost`` token-equivalents
    and may hold at most ``max_tokens`` padded tokens; returns the start index of every group.
    """
    count = len(lengths)
    best = [0.0] + [float("inf")] * count
    start_of = [0] * (count + 1)
    for end in range(1, count + 1):
        for start in range(end - 1, -1, -1):
            rows, width = end - start, lengths[start]
            if rows > 1 and rows * width > max_tokens:
                break
            cost = best[start] + rows * width + forward_cost
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    cuts, end = [], count
    while end > 0:
        cuts.append(start_of[end])
        end = start_of[end]
    return sorted(cuts)


class WaveGreedy:
    """Greedy decoding of many prompts in waves (see the module docstring).

    Args:
        model: a causal LM for which `supports_wave_greedy` holds, in eval mode.
        eos_ids (`list[int]`): tokens that end a row.
        pad_id (`int`): token written into padding slots (masked out, never attended to).
        max_new_tokens (`int`): most tokens generated per row.
        max_prefill_tokens (`int`): most padded prompt tokens in one prefill forward.
    """

    def __init__(self, model, eos_ids: Sequence[int], pad_id: int, max_new_tokens: int, max_prefill_tokens: int):
        use_grouped_query_sdpa(model)
        self.model = model
        self.eos_ids = set(eos_ids)
        self.pad_id = pad_id
        self.max_new_tokens = max_new_tokens
        self.max_prefill_tokens = max_prefill_tokens
        self.prefixes = PrefixCache(model)

    def generate(self, prompts: Sequence[Sequence[int]], prefix_lengths: Sequence[int]) -> list[list[int]]:
        """New token ids for each prompt (ending with its end token when it produced one).

        ``prefix_lengths[i]`` tokens at the start of prompt ``i`` are shared with every other prompt of the
        same length-``prefix_lengths[i]`` prefix and computed once (0: no sharing).
        """
        import torch

        with torch.inference_mode():
            parts = self._prefill_all(prompts, prefix_lengths)
            return self._decode(parts, len(prompts))

    # ------------------------------------------------------------------ prefill

    def _prefill_all(self, prompts, prefix_lengths) -> list[_Part]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for row, (prompt, shared) in enumerate(zip(prompts, prefix_lengths)):
            groups.setdefault(tuple(prompt[:shared]), []).append(row)
        parts = []
        for prefix, rows in groups.items():
            rows.sort(key=lambda r: len(prompts[r]), reverse=True)
            own = [len(prompts[r]) - len(prefix) for r in rows]
            cuts = split_by_padding(own, self.max_prefill_tokens) + [len(rows)]
            for start, end in zip(cuts, cuts[1:]):
                parts.append(self._prefill(prefix, [list(prompts[r][len(prefix):]) for r in rows[start:end]],
                                           rows[start:end]))
        return parts

    def _prefill(self, prefix: tuple[int, ...], own: list[list[int]], rows: list[int]) -> _Part:
        """One forward over rows laid out as [prefix][padding][own tokens], reusing the prefix's cache."""
        import torch

        device = self.model.device
        width = max(len(tokens) for tokens in own)
        input_ids = torch.full((len(own), width), self.pad_id, dtype=torch.long)
        own_mask = torch.zeros((len(own), width), dtype=torch.long)
        for index, tokens in enumerate(own):
            input_ids[index, width - len(tokens):] = torch.tensor(tokens)
            own_mask[index, width - len(tokens):] = 1
        mask = torch.cat([torch.ones((len(own), len(prefix)), dtype=torch.long), own_mask], dim=1).to(device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, len(prefix):]
        cache = self.prefixes.for_batch(prefix, len(own)) if prefix else None
        output = self.model(input_ids=input_ids.to(device), attention_mask=mask, position_ids=positions,
                            past_key_values=cache, use_cache=True, logits_to_keep=1)
        return _Part(rows, output.past_key_values, mask, output.logits[:, -1].argmax(-1))

    # ------------------------------------------------------------------ decode

    def _decode(self, parts: list[_Part], count: int) -> list[list[int]]:
        import torch

        cache, mask, tokens, rows = _join(parts, self.max_new_tokens)
        outputs: list[list[int]] = [[] for _ in range(count)]
        positions = mask.sum(-1, keepdim=True)
        finished = torch.zeros(len(rows), dtype=torch.bool, device=mask.device)
        eos = torch.tensor(sorted(self.eos_ids), device=mask.device)
        for step in range(self.max_new_tokens):
            for index, token, ended in zip(rows, tokens.tolist(), finished.tolist()):
                if not ended:
                    outputs[index].append(token)
            finished |= torch.isin(tokens, eos)
            if step == self.max_new_tokens - 1 or bool(finished.all()):
                break
            if int(finished.sum()) * 4 >= len(rows):  # drop ended rows once they are a quarter of the batch
                keep = (~finished).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                mask, positions, tokens, finished = mask[keep], positions[keep], tokens[keep], finished[keep]
                rows = [rows[i] for i in keep.tolist()]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            output = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions,
                                past_key_values=cache, use_cache=True, logits_to_keep=1)
            positions = positions + 1
            tokens = output.logits[:, -1].argmax(-1)
        return outputs


def _join(parts: list[_Part], room: int):
    """One decode batch from several prefilled groups: caches and masks left-padded to a common length, the
    caches moved into buffers with ``room`` free slots, so a decode step writes its new key and value in
    place instead of copying the whole cache as `DynamicLayer` does."""
    import torch
    import torch.nn.functional as F

    length = max(part.mask.shape[1] for part in parts)
    cache = parts[0].cache
    for index in range(len(cache.layers)):
        joined = [torch.cat([F.pad(getattr(part.cache.layers[index], name), (0, 0, length - part.mask.shape[1], 0))
                             for part in parts], dim=0) for name in ("keys", "values")]
        cache.layers[index] = _buffer_layer_class()(*joined, room)
    mask = torch.cat([F.pad(part.mask, (length - part.mask.shape[1], 0)) for part in parts], dim=0)
    tokens = torch.cat([part.first for part in parts])
    rows = [row for part in parts for row in part.rows]
    return cache, mask, tokens, rows


@functools.cache
def _buffer_layer_class():
    """Built on first use: transformers is imported lazily throughout the package."""
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """A full-attention cache layer in a preallocated buffer; ``keys`` / ``values`` are views of the filled
        part, so everything that reads a `DynamicLayer` reads this one the same way."""

        def __init__(self, keys, values, room: int):
            super().__init__()
            batch, heads, length, dim = keys.shape
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self._keys = keys.new_zeros((batch, heads, length + room, dim))
            self._values = values.new_zeros((batch, values.shape[1], length + room, values.shape[3]))
            self._keys[:, :, :length], self._values[:, :, :length] = keys, values
            self._set_length(length)

        def _set_length(self, length: int) -> None:
            self.length = length
            self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]

        def update(self, key_states, value_states, *args, **kwargs):
            added = key_states.shape[-2]
            self._keys[:, :, self.length:self.length + added] = key_states
            self._values[:, :, self.length:self.length + added] = value_states
            self._set_length(self.length + added)
            return self.keys, self.values

        def batch_select_indices(self, indices) -> None:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._set_length(self.length)

    return BufferLayer
