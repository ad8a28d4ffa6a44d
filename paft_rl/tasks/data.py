"""Loading a task's rows: synthetic generators, local files (JSONL / JSON / parquet / CSV / saved datasets)
or a hub id, with one clear error when none of them works."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from prompt_pool import UserError

from .base import Task

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_rows(task: Task, data: str | None = None, split: str | None = None, limit: int | None = None,
              seed: int = 0) -> datasets.Dataset:
    """Load the rows of ``task`` as a `datasets.Dataset` in file order, with a stable ``row_id`` column.

    Args:
        task (`Task`): the task adapter.
        data (`str`, *optional*): a local file or folder, or a hub id. Defaults to the task's hub dataset,
            or its generator for synthetic tasks.
        split (`str`, *optional*): split name (defaults to the task's train split).
        limit (`int`, *optional*): keep the first ``limit`` rows.
        seed (`int`, defaults to `0`): generator seed for synthetic tasks.
    """
    if limit is not None and limit <= 0:
        raise UserError(f"--limit must be a positive number of rows, got {limit}")
    split = split or task.train_split
    if data is None and task.generate is not None:
        size = limit or task.synthetic_size
        dataset = datasets.Dataset.from_list(task.generate(size, seed, split))
    elif data is None and task.hub_id is None:
        raise UserError(f"task {task.name!r} has no default dataset: pass --data FILE")
    else:
        dataset = _load(task, data or task.hub_id, split)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    missing = [column for column in task.columns if column not in dataset.column_names and column != "ground_truth"]
    if missing:
        raise UserError(f"dataset for task {task.name!r} lacks column(s) {', '.join(missing)} "
                        f"(has {', '.join(dataset.column_names)}); pick the right --task or --data")
    if "row_id" not in dataset.column_names:
        dataset = dataset.add_column("row_id", list(range(len(dataset))))
    return dataset


def _is_blank(path: Path) -> bool:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.strip():
                return False
    return True


def check_jsonl_lines(path: Path) -> None:
    """Raise a `UserError` naming the first line of a JSON Lines file that is not a JSON object."""
    if path.suffix.lower() not in (".jsonl", ".json"):
        return
    with path.open(encoding="utf-8", errors="replace") as handle:
        first = handle.read(1)
        handle.seek(0)
        if path.suffix.lower() == ".json" and first == "[":
            return  # one JSON document, not lines
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path.name}:{number}: not valid JSON ({error.msg}); fix or remove that line") from None
            if not isinstance(record, dict):
                raise UserError(f"{path.name}:{number}: a row must be a JSON object, got {type(record).__name__}")


def _load(task: Task, source: str, split: str) -> datasets.Dataset:
    path = Path(source)
    try:
        if path.is_file():
            if task.name == "bfcl":
                return _bfcl_file(path)
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise UserError(f"{path.name}: unsupported data format {path.suffix!r}; use .jsonl, .json, .parquet or .csv")
            if _is_blank(path):
                raise UserError(f"data file {source!r} is empty: it needs one row per example")
            try:
                return datasets.load_dataset(builder, data_files=str(path), split="train")
            except Exception:
                check_jsonl_lines(path)  # name the line that breaks it, when that is the trouble
                raise
        if path.is_dir():
            if (path / "dataset_info.json").exists() or (path / "state.json").exists():
                loaded = datasets.load_from_disk(str(path))
                return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
            return datasets.load_dataset(str(path), split=split)
        if source.startswith((".", "/", "~")) or source.endswith(tuple(FILE_BUILDERS)):
            raise UserError(f"data file {source!r} does not exist")
        config = task.hub_config if source == task.hub_id else None
        return datasets.load_dataset(source, config, split=split)
    except UserError:
        raise
    except Exception as error:  # datasets raises many types (connection, missing split, schema)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load dataset {source!r} split {split!r}: {first_line}; pass a local file with --data") from None


def _bfcl_file(path: Path) -> datasets.Dataset:
    """Read a BFCL question file and join its ``possible_answer`` file (same name, sibling folder).

    BFCL files are JSON Lines with per-row function schemas of different shapes, which Arrow cannot
    infer as one struct, so nested values are kept as JSON strings.
    """
    answers = {}
    answer_path = path.parent / "possible_answer" / path.name
    if answer_path.exists():
        for line in answer_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                answers[record["id"]] = record["ground_truth"]
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path.name}:{number}: not valid JSON ({error.msg})") from None
        truth = record.get("ground_truth", answers.get(record.get("id"), []))
        rows.append({
            "id": str(record.get("id", number - 1)),
            "question": json.dumps(record["question"], ensure_ascii=False),
            "function": json.dumps(record["function"], ensure_ascii=False),
            "ground_truth": json.dumps(truth, ensure_ascii=False),
        })
    return datasets.Dataset.from_list(rows)
