"""The resume log: every finished generation is appended to a JSONL file as soon as its batch ends.

A run killed at any moment (``kill -9`` included) loses at most the batch in flight: the next run with the
same arguments reads the log, drops a torn last line, and generates only the cells it lacks. One log per
model and generation settings (the file name carries their hash), and each line carries a hash of its
exact prompt, so a changed template, row or chat format is regenerated, never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

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
    """

    def __init__(self, out_dir: Path, label: str, settings: dict):
        self.path = Path(out_dir) / ".resume" / f"{label}-{fingerprint(settings)}.jsonl"
        self.settings = settings
        self.load_seconds = 0.0
        self.entries: dict[tuple[str, str], dict] = {}
        self._read()

    def _read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash: its cell is generated again
                if "load_seconds" in entry:
                    self.load_seconds = max(self.load_seconds, float(entry["load_seconds"]))
                elif isinstance(entry, dict) and {"template", "row", "prompt_hash", "text"} <= entry.keys():
                    self.entries[(entry["template"], entry["row"])] = entry

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb") as handle:  # a torn last line must not swallow the next record
                handle.seek(-1, os.SEEK_END)
                needs_newline = handle.read(1) != b"\n"
        else:
            needs_newline = False
        text = ("\n" if needs_newline else "") + "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
