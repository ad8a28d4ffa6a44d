"""Reading and writing pool files.

JSONL is the native format (one ``{"id", "text", "split", "source"}`` object a line). YAML, JSON, CSV and
XLSX are read too: PAFT published its pools as spreadsheets with a single ``text`` column whose cells hold
literal ``\\n`` sequences, so those become newlines for spreadsheet formats only.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .pool import PromptPool, Template

BUILTIN_DIR = Path(__file__).parent / "builtin"
READERS = {".jsonl": "jsonl", ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".csv": "csv", ".xlsx": "xlsx"}


def builtin_names() -> list[str]:
    """Names of the pools shipped with the package (one per task)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.jsonl"))


def load_pool(spec: str | Path) -> PromptPool:
    """Load a pool from a file path, or a built-in pool by name (``gsm8k``, ``hellaswag``, ...)."""
    path = Path(spec)
    if path.exists():
        return read_pool(path)
    if str(spec) in builtin_names():
        pool = read_pool(BUILTIN_DIR / f"{spec}.jsonl")
        pool.name = f"builtin:{spec}"
        return pool
    raise UserError(f"pool {str(spec)!r} is neither a file nor a built-in pool (built-in: {', '.join(builtin_names())})")


def read_pool(path: str | Path) -> PromptPool:
    """Read a pool file; the format follows the file extension."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pool file {str(path)!r} does not exist")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path.name}: unsupported pool format {path.suffix!r}; use one of {', '.join(READERS)}")
    records = {"jsonl": _jsonl_records, "json": _json_records, "yaml": _yaml_records, "csv": _csv_records, "xlsx": _xlsx_records}[kind](path)
    spreadsheet = kind in ("csv", "xlsx")
    templates = [_template(record, path, row, spreadsheet) for row, record in records]
    return PromptPool(templates, name=path.name)


def write_jsonl(pool: PromptPool, path: str | Path) -> Path:
    """Write ``pool`` as JSONL atomically (a crash never leaves a half-written pool)."""
    lines = (json.dumps(t.to_dict(), ensure_ascii=False) for t in pool.templates)
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------- readers
# Each reader yields (row, record) pairs; `row` is the 0-based data row, used for default ids.


def _jsonl_records(path: Path) -> Iterable[tuple[int, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append((len(records), json.loads(line)))
            except json.JSONDecodeError as error:
                raise UserError(f"{path.name}:{line_number}: not valid JSON ({error.msg}); fix or remove that line") from None
    return records


def _json_records(path: Path) -> Iterable[tuple[int, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path.name}:{error.lineno}: not valid JSON ({error.msg})") from None
    return list(enumerate(_template_list(data, path)))


def _yaml_records(path: Path) -> Iterable[tuple[int, Any]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path.name}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    return list(enumerate(_template_list(data, path)))


def _template_list(data: Any, path: Path) -> list:
    if isinstance(data, dict) and "templates" in data:
        data = data["templates"]
    if not isinstance(data, list):
        raise UserError(f"{path.name}: expected a list of templates (or a mapping with a 'templates' list)")
    return data


def _csv_records(path: Path) -> Iterable[tuple[int, Any]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        _require_text_column(reader.fieldnames or [], path)
        return [(row, {k: v for k, v in record.items() if v not in (None, "")}) for row, record in enumerate(reader)]


def _xlsx_records(path: Path) -> Iterable[tuple[int, Any]]:
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises several unrelated types for a damaged file
        raise UserError(f"{path.name}: cannot read spreadsheet ({error})") from None
    rows = workbook.worksheets[0].iter_rows(values_only=True)
    header = [str(cell).strip() if cell is not None else "" for cell in next(rows, [])]
    _require_text_column(header, path)
    records = []
    for values in rows:
        record = {name: value for name, value in zip(header, values) if name and value not in (None, "")}
        if "text" in record:  # trailing empty rows are common in spreadsheets
            records.append((len(records), record))
    workbook.close()
    return records


def _require_text_column(header: list[str], path: Path) -> None:
    if "text" not in header:
        raise UserError(f"{path.name}: no 'text' column (columns: {', '.join(h for h in header if h) or 'none'})")


def _template(record: Any, path: Path, row: int, spreadsheet: bool) -> Template:
    if isinstance(record, str):
        record = {"text": record}
    if not isinstance(record, dict):
        raise UserError(f"{path.name}: template {row} is a {type(record).__name__}, expected an object with 'text'")
    if "text" not in record:
        raise UserError(f"{path.name}: template {row} has no 'text'; every template needs one")
    text = str(record["text"])
    if spreadsheet:
        text = text.replace("\\n", "\n")
    template_id = record.get("id")
    template_id = f"{path.stem}-{row}" if template_id in (None, "") else str(template_id)
    split = str(record.get("split") or "train").strip()
    return Template(id=template_id, text=text, split=split, source=record.get("source"))
