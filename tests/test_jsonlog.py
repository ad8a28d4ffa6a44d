"""Append-only JSON Lines logs: one writer and reader for the eval resume log and the pool-generation cache."""

from __future__ import annotations

import json

from paft_rl.construction import ResponseCache
from paft_rl.jsonlog import append_log, read_log


def test_a_response_cached_after_a_torn_last_line_is_kept(tmp_path):
    """Before: the generation cache appended right after a line torn by a crash, so the next response shared its
    line, could not be read back and was asked for again on every later run."""
    path = tmp_path / "cache.jsonl"
    ResponseCache(path).put({"key": "a", "text": "first"})
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"key": "torn", "te')  # killed mid-write
    ResponseCache(path).put({"key": "b", "text": "second"})
    again = ResponseCache(path)
    assert len(again) == 2 and again.get("b") == {"key": "b", "text": "second"} and "torn" not in again
    assert path.read_text(encoding="utf-8").splitlines()[-1] == json.dumps({"key": "b", "text": "second"})


def test_read_log_skips_what_is_not_a_record_and_restart_replaces_the_file(tmp_path):
    path = tmp_path / "deep" / "log.jsonl"
    assert read_log(path) == []
    append_log(path, [{"n": 1}, {"n": 2}])
    with path.open("a", encoding="utf-8") as handle:
        handle.write('[1, 2]\n{"n": ')
    append_log(path, [{"n": 3}])
    assert read_log(path) == [{"n": 1}, {"n": 2}, {"n": 3}]
    append_log(path, [{"n": 4}], restart=True)
    assert read_log(path) == [{"n": 4}]
