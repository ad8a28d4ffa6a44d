"""A model's content as a short hash: the key of every cached answer, result and workflow stage that consumes a
model, so a model retrained or edited in place is judged afresh, never by the answers of the model it replaced.

A local folder is read from its top-level files:

- files that define what the model computes besides its weights (config, generation config, tokenizer files, chat
  template, adapter config, remote code: ``*.json``, ``*.txt``, ``*.model``, ``*.jinja``, ``*.tiktoken``, ``*.py``)
  are hashed in full;
- every other file (the weights: ``*.safetensors``, ``*.bin``, ``*.gguf``...) by its name, size and modification
  time in nanoseconds, plus a hash of its first and last MiB.

Hashing multi-GB weights in full would add seconds to minutes to every evaluation and every workflow rerun; a stat
and 2 MiB of reading per file cost milliseconds and catch what happens in practice: saving a model (an in-place
retrain, ``--overwrite true``, a hand-copied checkpoint) writes new files, hence new modification times, and a
safetensors file's edges hold its header and its first and last tensors, so even a copy that keeps the old
modification time differs there. Records of how a model was made rather than what it computes (trainer state,
training arguments, workflow stage markers, README) and sub-folders (checkpoints, logs) are left out. A folder
copied without keeping modification times (plain ``cp -r``) reads as changed: it is then evaluated again, which
costs time but never reports an old number.

A hub id is identified by the commit of its snapshot in the local Hugging Face cache (a snapshot never changes
under its commit); when nothing of it is cached yet, its ``config.json`` is fetched to learn the commit, and
where even that fails (offline), the id and revision stand for it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

EDGE_BYTES = 1 << 20
# Read in full: small files that decide what a model computes, apart from its weights.
DEFINING_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken", ".py")
# How a model was made, not what it computes: a rerun that rewrites them leaves the model as it was.
NOT_THE_MODEL = {"trainer_state.json", "training_args.bin", "stage.json", "stage.started.json", "README.md",
                 "all_results.json", "train_results.json", "eval_results.json"}


def folder_fingerprint(folder: str | Path) -> str:
    """The fingerprint of the model files directly in ``folder`` (see the module docstring for what is read)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith(".") or path.name in NOT_THE_MODEL or not path.is_file():
            continue
        digest.update(path.name.encode("utf-8") + b"\0")
        if path.suffix in DEFINING_SUFFIXES:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        else:
            stat = path.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            digest.update(_edges(path, stat.st_size))
    return digest.hexdigest()[:16]


def _edges(path: Path, size: int) -> bytes:
    with path.open("rb") as handle:
        first = handle.read(EDGE_BYTES)
        if size > 2 * EDGE_BYTES:
            handle.seek(size - EDGE_BYTES)
        last = handle.read()
    return hashlib.sha256(first + b"\0" + last).digest()


def hub_fingerprint(repo_id: str, revision: str | None = None) -> str:
    """``hub:<id>@<commit>`` of the snapshot the local cache resolves ``revision`` to, or ``hub:<id>@<revision>``
    when the commit cannot be learnt (not cached, and the hub unreachable)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if not isinstance(cached, str):
        try:  # what loading the model would fetch first anyway
            cached = hf_hub_download(repo_id, "config.json", revision=revision)
        except (OSError, ValueError, EntryNotFoundError):
            return f"hub:{repo_id}@{revision or 'main'}"
    return f"hub:{repo_id}@{Path(cached).parent.name}"


def model_fingerprint(spec: str, revision: str | None = None) -> str:
    """The fingerprint of the model ``spec`` names: a model folder, a LoRA adapter folder (with its base model's),
    or a hub id (`hub_fingerprint`). A spec that cannot be a model is a one-line `UserError` (`resolve_model`)."""
    from .models import resolve_model

    source = resolve_model(spec)
    parts = [_base_fingerprint(source.base, revision)]
    if source.adapter is not None:
        parts.append(folder_fingerprint(source.adapter))
    return parts[0] if len(parts) == 1 else hashlib.sha256("+".join(parts).encode()).hexdigest()[:16]


def _base_fingerprint(base: str, revision: str | None) -> str:
    path = Path(base).expanduser()
    return folder_fingerprint(path) if path.is_dir() else hub_fingerprint(base, revision)
