"""Finding and loading a model to evaluate: a local folder, a hub id, or a LoRA adapter folder over its base.

Everything that can fail on bad input (a missing path, a folder that is not a model, an adapter whose base
cannot be found) is checked from small files first, before any weights are read.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from prompt_pool import UserError, first_line


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights and tokenizer come from.

    Args:
        spec (`str`): what the user passed (also the model's name in the results).
        base (`str`): a folder or hub id holding the full model.
        adapter (`str`, *optional*): a PEFT adapter folder applied over ``base``.
        tokenizer (`str`): where the tokenizer is read from (the adapter folder when it has one).
    """

    spec: str
    base: str
    adapter: str | None
    tokenizer: str


def _looks_like_path(spec: str) -> bool:
    # A hub id is "name" or "owner/name"; anything else that does not exist is a mistyped path.
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def resolve_model(spec: str) -> ModelSource:
    """Work out what ``spec`` names, with a one-line `UserError` when it cannot be a model."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"model {spec!r} is a file; pass a model folder, a LoRA adapter folder or a hub id")
        if (path / "adapter_config.json").is_file():
            return _adapter_source(spec, path)
        if not (path / "config.json").is_file():
            raise UserError(f"model folder {spec!r} has no config.json (nor adapter_config.json); "
                            "pass a saved model, a LoRA adapter folder or a hub id")
        return ModelSource(spec=spec, base=str(path), adapter=None, tokenizer=str(path))
    if _looks_like_path(spec):
        raise UserError(f"model path {spec!r} does not exist")
    return ModelSource(spec=spec, base=spec, adapter=None, tokenizer=spec)


def _adapter_source(spec: str, path: Path) -> ModelSource:
    try:
        adapter_config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path / 'adapter_config.json'}: {error}") from None
    base = adapter_config.get("base_model_name_or_path")
    if not base:
        raise UserError(f"LoRA adapter {spec!r} does not name its base model (base_model_name_or_path)")
    base_path = Path(base).expanduser()
    if not base_path.is_absolute() and (path / base).exists():
        base = str((path / base).resolve())  # a base saved relative to the adapter folder
    elif not base_path.exists() and _looks_like_path(base):
        raise UserError(f"LoRA adapter {spec!r} names base model {base!r}, which does not exist")
    has_tokenizer = any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    return ModelSource(spec=spec, base=base, adapter=str(path), tokenizer=str(path) if has_tokenizer else base)


def load_tokenizer(source: ModelSource):
    """The tokenizer, left-padded for batched generation, with a pad token (the eos token if it lacks one)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.tokenizer)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the tokenizer of model {source.spec!r}: {first_line(error)}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
NO_TOKENIZER_LIMIT = 10**8  # transformers writes int(1e30) as model_max_length when a tokenizer sets none


def context_length(source: ModelSource, tokenizer) -> int | None:
    """The longest sequence, prompt plus completion in tokens, that the model holds; `None` when nothing says.

    One rule for training (`paft_rl.trainers.preflight`) and evaluation (`paft_rl.eval.runner`), the smaller of:

    - the positions the model's config declares, on its text part (``get_text_config()``: a vision-language
      config nests it in ``text_config``), under the names transformers' configs use: ``max_position_embeddings``
      (most decoders; GPT-2 maps it to ``n_positions``), ``n_positions``, ``max_seq_len`` (MPT), ``seq_length``.
      Positions beyond these have no embedding (or were never trained with RoPE).
    - the tokenizer's ``model_max_length``, the length the model was published for, but only below
      ``NO_TOKENIZER_LIMIT``: a tokenizer whose files set no limit reports a huge sentinel (``int(1e30)``),
      which is no statement about the model.

    Both are statements about what the model was built for, so the stricter one wins: a prompt past either is
    refused before any weights load rather than generating from positions the model never saw. A config that
    cannot be read is a `UserError`: the model could not be loaded from it either.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source.base)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the config of model {source.spec!r}: {first_line(error)}") from None
    return config_context_length(config, tokenizer)


def config_context_length(config, tokenizer) -> int | None:
    """`context_length` of a loaded model's config (SAPO scores a model already in memory)."""
    text_config = config.get_text_config()
    limits = [getattr(text_config, name, None) for name in POSITION_KEYS]
    limits = [value for value in limits if isinstance(value, int) and value > 0]
    model_max = tokenizer.model_max_length
    if isinstance(model_max, int) and 0 < model_max < NO_TOKENIZER_LIMIT:
        limits.append(model_max)
    return min(limits) if limits else None


def load_hf_model(source: ModelSource, device: str, dtype: str = "auto"):
    """Load the model for generation (the adapter merged into its base, so generation runs at full speed)."""
    from transformers import AutoModelForCausalLM

    torch_dtype = _torch_dtype(dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(source.base, dtype=torch_dtype)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load model {source.spec!r}: {first_line(error)}") from None
    if source.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.adapter).merge_and_unload()
    return model.to(device).eval()


def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        # float32 on CPU: bf16 matmuls are slow on most CPUs and change greedy outputs.
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise UserError(f"--dtype must be auto, float32, bfloat16 or float16, got {dtype!r}") from None


_GENERIC_FOLDERS = re.compile(r"^(checkpoint-\d+|final|best|model|merged|adapter|lora|output|out)$", re.IGNORECASE)
_HUB_CACHE = re.compile(r"models--[^/\\]+?--([^/\\]+)[/\\]snapshots[/\\][0-9a-f]+[/\\]?$")


def derive_label(spec: str, depth: int = 1) -> str:
    """A short name for a model: the folder's name (with its parent for ``checkpoint-60``, ``final``...), the
    model name of a hub cache snapshot (``models--org--name/snapshots/<hash>``), or a hub id's name.

    ``depth`` keeps that many more trailing path parts, to tell apart folders of the same name.
    """
    cached = _HUB_CACHE.search(spec)
    if cached:
        return cached.group(1)
    parts = [p for p in Path(spec.rstrip("/\\")).parts if p not in ("/", "\\", ".", "..", "~")] or [spec]
    keep = depth + (1 if _GENERIC_FOLDERS.match(parts[-1]) else 0)
    return "/".join(parts[-keep:])


def model_labels(specs: list[str], labels: list[str] | None = None) -> list[str]:
    """One short, unique label per model: ``labels`` when given (one per model), else `derive_label`, with
    more of the path where two folders share a name."""
    if labels:
        if len(labels) != len(specs):
            raise UserError(f"give one label per model in --labels ({len(specs)} models, {len(labels)} labels)")
        if len(set(labels)) != len(labels) or not all(label.strip() for label in labels):
            raise UserError("--labels must be distinct and not empty")
        return list(labels)
    derived = [derive_label(spec) for spec in specs]
    for depth in range(2, 6):
        clashing = {label for label in derived if derived.count(label) > 1}
        if not clashing:
            return derived
        derived = [derive_label(spec, depth) if label in clashing else label for spec, label in zip(specs, derived)]
    seen: Counter = Counter()
    unique = []
    for label in derived:
        seen[label] += 1
        unique.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return unique
