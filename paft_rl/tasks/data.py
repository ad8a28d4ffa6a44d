"""Loading a task's rows: synthetic generators, local files (JSONL / JSON / parquet / CSV / saved datasets)
or a hub id, with one clear error when none of them works."""

from __future__ import annotations

from pathlib import Path

import datasets

from prompt_pool import UserError, first_line, is_blank, read_jsonl

from .base import Task

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# A synthetic split never ends; more rows than this at once is a typo (`--limit 99999999`), not an evaluation: it
# would hold gigabytes of prompts. Benchmarks' evaluation splits are this size (HellaSwag's validation: 10,042).
SYNTHETIC_MAX_ROWS = 10_000


def load_rows(task: Task, data: str | None = None, split: str | None = None, limit: int | None = None,
              seed: int = 0) -> datasets.Dataset:
    """Load the rows of ``task`` as a `datasets.Dataset` in file order, with a stable ``row_id`` column.

    Args:
        task (`Task`): the task adapter.
        data (`str`, *optional*): a local file or folder, or a hub id. Defaults to the task's hub dataset,
            or its generator for synthetic tasks.
        split (`str`, *optional*): split name (defaults to the task's train split). A local file is one split,
            ``train``: slice it as `datasets` slices splits (``train[:1000]``, ``train[1000:]``, ``train[:80%]``) to
            train on some of its rows and evaluate on the others; any other name reads the whole file.
        limit (`int`, *optional*): keep the first ``limit`` rows.
        seed (`int`, defaults to `0`): generator seed for synthetic tasks.
    """
    if limit is not None and limit <= 0:
        raise UserError(f"--limit must be a positive number of rows, got {limit}")
    split = split or task.train_split
    if data is None and task.generate is not None:
        size = limit or task.synthetic_size
        if size > SYNTHETIC_MAX_ROWS:
            raise UserError(f"a limit of {size} rows is more than task {task.name!r} generates at once "
                            f"({SYNTHETIC_MAX_ROWS}): lower it")
        dataset = datasets.Dataset.from_list(task.generate(size, seed, split))
    elif data is None and task.hub_id is None:
        raise UserError(f"task {task.name!r} has no default dataset: pass --data FILE")
    else:
        dataset = _load(task, data or task.hub_id, split)
    return task_rows(task, dataset, limit)


def task_rows(task: Task, dataset: datasets.Dataset, limit: int | None = None) -> datasets.Dataset:
    """``dataset``'s first ``limit`` rows, checked to hold ``task``'s columns, with a stable ``row_id`` column (its
    index) unless it has one: rows loaded by `load_rows`, or given by a caller as the hub gives them."""
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    missing = [column for column in task.columns if column not in dataset.column_names and column != "ground_truth"]
    if missing:
        raise UserError(f"dataset for task {task.name!r} lacks column(s) {', '.join(missing)} "
                        f"(has {', '.join(dataset.column_names)}); pick the right --task or --data")
    if "row_id" not in dataset.column_names:
        dataset = dataset.add_column("row_id", list(range(len(dataset))))
    return dataset


def load_row(task: Task, data: str | None, split: str | None, index: int, seed: int = 0) -> dict:
    """Row ``index`` of a split (as `load_rows` would give it): made alone for a synthetic task, whatever the
    index; read from the data otherwise."""
    if index < 0:
        raise UserError(f"--index must be >= 0, got {index}")
    if data is None and task.generate is not None:
        (row,) = task.generate(1, seed, split or task.train_split, start=index)
        return {**row, "row_id": index}
    rows = load_rows(task, data, split, seed=seed)
    if index >= len(rows):
        raise UserError(f"--index {index} is past the end of the data ({len(rows)} rows)")
    return rows[index]


def check_jsonl_lines(path: Path) -> None:
    """Raise a `UserError` naming the first line of a JSON Lines file that is not a JSON object."""
    if path.suffix.lower() not in (".jsonl", ".json"):
        return
    with path.open(encoding="utf-8", errors="replace") as handle:
        if path.suffix.lower() == ".json" and handle.read(1) == "[":
            return  # one JSON document, not lines
    for number, record in read_jsonl(path, errors="replace"):
        if not isinstance(record, dict):
            raise UserError(f"{path.name}:{number}: a row must be a JSON object, got {type(record).__name__}")


def file_slice(split: str, path: Path) -> str:
    """The split to read a local data file with: ``train`` (the whole file; `datasets` names a file's rows so), or
    a slice of it such as ``train[:1000]``."""
    name, bracket, _ = split.partition("[")
    if not bracket:
        return "train"
    if name != "train":
        raise UserError(f"split {split!r}: {path.name} is one split, 'train'; slice it as train[:1000] or "
                        "train[1000:]")
    return split


def _load(task: Task, source: str, split: str) -> datasets.Dataset:
    path = Path(source)
    try:
        if path.is_file():
            if task.read_file is not None:  # a format of the task's own (BFCL's question + answer files)
                return task.read_file(path)
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise UserError(f"{path.name}: unsupported data format {path.suffix!r}; use .jsonl, .json, .parquet "
                                "or .csv")
            if is_blank(path):
                raise UserError(f"data file {source!r} is empty: it needs one row per example")
            file_split = file_slice(split, path)
            try:
                loaded = datasets.load_dataset(builder, data_files=str(path), split=file_split)
            except ValueError as error:
                if file_split == "train":
                    check_jsonl_lines(path)  # name the line that breaks it, when that is the trouble
                    raise
                raise UserError(f"split {split!r} is no slice of {path.name}: {first_line(error)}; write it as "
                                "train[:1000], train[1000:] or train[:80%]") from None
            except Exception:
                check_jsonl_lines(path)
                raise
            if len(loaded) == 0:
                raise UserError(f"split {split!r} selects no row of {path.name}: check the slice's bounds")
            return loaded
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
        raise UserError(f"cannot load dataset {source!r} split {split!r}: {first_line(error)}; pass a local file "
                        "with --data") from None
