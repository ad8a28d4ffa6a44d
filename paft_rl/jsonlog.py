"""Append-only JSON Lines logs: the evaluation's resume log and pool generation's response cache.

A record is written as soon as its work is done and forced to disk before the writer goes on, so a run killed
at any moment (``kill -9`` included) loses at most the record being written. That record can be left as a torn
last line: reading skips it, and the next append starts on a new line so it never swallows the next record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path


def read_log(path: str | Path) -> list[dict]:
    """The records of a log in file order; a line that is not a JSON object (torn by a crash) is skipped, and a
    missing file has none."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn by a crash: its work is simply done again
            if isinstance(record, dict):
                records.append(record)
    return records


def append_log(path: str | Path, records: Iterable[dict], restart: bool = False) -> None:
    """Append ``records`` to the log at ``path`` (created with its folder), flushed and fsynced before returning.

    Args:
        path (`str` or `Path`): the log file.
        records (`Iterable[dict]`): what to append, one line each.
        restart (`bool`, defaults to `False`): replace what the file holds instead of appending to it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = restart or not path.exists() or not path.stat().st_size
    needs_newline = False
    if not fresh:
        with path.open("rb") as handle:  # a torn last line must not swallow the next record
            handle.seek(-1, os.SEEK_END)
            needs_newline = handle.read(1) != b"\n"
    text = ("\n" if needs_newline else "") + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with path.open("w" if fresh else "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
