"""Response cache: a JSONL file of received responses keyed by request hash.

Generation is the slow, paid part of building a pool; a run that is interrupted, or re-run after a filter
change, must not ask again for what it already has. Lines are appended as responses arrive, so a crash
loses at most the line being written (a torn last line is skipped on load).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path


class ResponseCache:
    """Responses by request key, kept in memory and (when ``path`` is given) appended to a JSONL file.

    Args:
        path (`str` or `Path`, *optional*): the cache file; ``None`` keeps responses in memory only.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._records: dict[str, dict] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            self._records = _read_records(self.path)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict | None:
        return self._records.get(key)

    def put(self, record: dict) -> None:
        """Store one response record (it must have a ``key``); thread-safe."""
        line = json.dumps(record, ensure_ascii=False)
        with self._lock:
            self._records[record["key"]] = record
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line + "\n")


def _read_records(path: Path) -> dict[str, dict]:
    records = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write; that request is simply asked again
            if isinstance(record, dict) and "key" in record and isinstance(record.get("text"), str):
                records[record["key"]] = record
    return records
