"""The resume log: every finished generation is appended to a JSONL file as soon as its batch ends.

A run killed at any moment (``kill -9`` included) loses at most the batch in flight: the next run with the
same arguments reads the log (`paft_rl.jsonlog`, which drops a torn last line) and generates only the cells it
lacks. One log per model and generation settings (the file name carries their hash), and each line carries a
hash of its exact prompt, so a changed template, row or chat format is regenerated, never reused. The log's first
line records the fingerprint of the model's files (`paft_rl.eval.fingerprint`): answers of a model since retrained or
edited in place are discarded, never reused as the new model's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..jsonlog import append_log, read_log
from .backends import Generation


def fingerprint(settings) -> str:
    """A short stable hash of settings (those that change what a model generates; a workflow stage's)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class GenerationLog:
    """Append-only log of generations for one model under ``out_dir/.resume``.

    Args:
        out_dir (`Path`): the evaluation output folder.
        label (`str`): a file-name-safe name for the model.
        settings (`dict`): model and generation settings; their hash names the file.
        model_fingerprint (`str`): the model's content (`paft_rl.eval.fingerprint.model_fingerprint`). A log written
            for other content is set aside: ``replaced`` then holds the fingerprint it was written for
            (``"unrecorded"`` for a log of an older paft-rl), and the first record starts the file anew.
    """

    def __init__(self, out_dir: Path, label: str, settings: dict, model_fingerprint: str):
        self.path = Path(out_dir) / ".resume" / f"{label}-{fingerprint(settings)}.jsonl"
        self.settings = settings
        self.model_fingerprint = model_fingerprint
        self.replaced: str | None = None
        self._restart = False
        self.load_seconds = 0.0
        self.entries: dict[tuple[str, str], dict] = {}
        self._read()

    def _read(self) -> None:
        if not self.path.exists():
            return
        written_for, load_seconds, entries = None, 0.0, {}
        for entry in read_log(self.path):
            if "model_fingerprint" in entry:
                written_for = entry["model_fingerprint"]
            elif "load_seconds" in entry:
                load_seconds = max(load_seconds, float(entry["load_seconds"]))
            elif {"template", "row", "prompt_hash", "text"} <= entry.keys():
                entries[(entry["template"], entry["row"])] = entry
        if written_for != self.model_fingerprint:
            if entries:
                self.replaced = written_for or "unrecorded"
            self._restart = True
            return
        self.load_seconds, self.entries = load_seconds, entries

    def get(self, key: tuple[str, str], prompt: str) -> Generation | None:
        """The logged generation for ``key`` if it was made from exactly this prompt."""
        entry = self.entries.get(key)
        if entry is None or entry["prompt_hash"] != prompt_hash(prompt):
            return None
        logliks = tuple(entry["logliks"]) if "logliks" in entry else None
        return Generation(entry["text"], int(entry["tokens"]), float(entry["seconds"]), logliks)

    def record_load(self, seconds: float) -> None:
        self.load_seconds = max(self.load_seconds, seconds)
        self._append([{"load_seconds": seconds}])

    def record(self, results: list[tuple[tuple[str, str], Generation]], prompts: dict[tuple[str, str], str]) -> None:
        """Append one batch of results and force it to disk before returning."""
        lines = []
        for key, generation in results:
            entry = {"template": key[0], "row": key[1], "prompt_hash": prompt_hash(prompts[key]),
                     "text": generation.text, "tokens": generation.tokens, "seconds": generation.seconds}
            if generation.logliks is not None:
                entry["logliks"] = list(generation.logliks)
            self.entries[key] = entry
            lines.append(entry)
        self._append(lines)

    def _append(self, entries: list[dict]) -> None:
        # The first record after the model changed (or into a new log) starts the file with the model's fingerprint.
        fresh = self._restart or not self.path.exists() or not self.path.stat().st_size
        if fresh:
            entries = [{"model_fingerprint": self.model_fingerprint}, *entries]
            self._restart = False
        append_log(self.path, entries, restart=fresh)
