"""Response cache: a JSONL file of received responses keyed by request hash.

Generation is the slow, paid part of building a pool; a run that is interrupted, or re-run after a filter
change, must not ask again for what it already has. Each response is appended as it arrives, to an append-only
log (`paft_rl.jsonlog`: forced to disk, a torn last line skipped on load and never glued to the next record).
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..jsonlog import append_log, read_log


class ResponseCache:
    """Responses by request key, kept in memory and (when ``path`` is given) appended to a JSONL file.

    Args:
        path (`str` or `Path`, *optional*): the cache file; ``None`` keeps responses in memory only.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._records: dict[str, dict] = {}
        for record in read_log(self.path) if self.path is not None else ():
            if "key" in record and isinstance(record.get("text"), str):
                self._records[record["key"]] = record

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict | None:
        return self._records.get(key)

    def put(self, record: dict) -> None:
        """Store one response record (it must have a ``key``); thread-safe."""
        with self._lock:
            self._records[record["key"]] = record
            if self.path is not None:
                append_log(self.path, [record])
