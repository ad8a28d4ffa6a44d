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
    if path.is_dir():
        raise UserError(f"{str(path)!r} is a folder: name a pool file ({', '.join(READERS)}) instead")
    if not path.is_file():
        raise UserError(f"pool file {str(path)!r} does not exist")
    kind = pool_format(path)
    readers = {"jsonl": _jsonl_records, "json": _json_records, "yaml": _yaml_records, "csv": _csv_records,
               "xlsx": _xlsx_records}
    try:
        records = readers[kind](path)
    except UnicodeDecodeError as error:
        raise UserError(f"{path.name}: not a UTF-8 text file (byte {error.start}); a {kind} pool is text with one "
                        "template per record") from None
    spreadsheet = kind in ("csv", "xlsx")
    templates = [_template(record, path, row, spreadsheet) for row, record in records]
    return PromptPool(templates, name=path.name)


def pool_format(path: str | Path) -> str:
    """The pool format a file name's suffix names, or a `UserError` listing the supported suffixes."""
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path.name}: unsupported pool format {path.suffix or '(no suffix)'!r}; use one of "
                        f"{', '.join(READERS)}")
    return kind


def write_pool(pool: PromptPool, path: str | Path) -> Path:
    """Write ``pool`` atomically in the format ``path``'s suffix names (a crash never leaves half a pool)."""
    kind = pool_format(path)
    if kind == "xlsx":
        return _write_xlsx(pool, Path(path))
    records = [t.to_dict() for t in pool.templates]
    if kind == "jsonl":
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    elif kind == "json":
        text = json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    elif kind == "yaml":
        text = yaml.safe_dump({"templates": records}, sort_keys=False, allow_unicode=True)
    else:
        text = _csv_text(records)
    return atomic_write_text(path, text)


def write_jsonl(pool: PromptPool, path: str | Path) -> Path:
    """Write ``pool`` as JSONL atomically, whatever the suffix."""
    lines = (json.dumps(t.to_dict(), ensure_ascii=False) for t in pool.templates)
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def _spreadsheet_rows(records: list[dict]) -> list[list[str]]:
    """Header and rows of a spreadsheet pool; a structured ``source`` is kept as JSON text. The ``answer_format``
    column is written when a template declares one."""
    formats = any("answer_format" in record for record in records)
    rows = [["id", "text", "split", "source"] + (["answer_format"] if formats else [])]
    for record in records:
        source = record.get("source")
        source = "" if source is None else source if isinstance(source, str) else json.dumps(source, ensure_ascii=False)
        row = [record["id"], record["text"], record["split"], source]
        rows.append(row + ([record.get("answer_format", "")] if formats else []))
    return rows


def _csv_text(records: list[dict]) -> str:
    import io

    buffer = io.StringIO()
    csv.writer(buffer).writerows(_spreadsheet_rows(records))
    return buffer.getvalue()


def _write_xlsx(pool: PromptPool, path: Path) -> Path:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in _spreadsheet_rows([t.to_dict() for t in pool.templates]):
        sheet.append(row)
    return atomic_write(path, workbook.save, suffix=".xlsx")


def atomic_write(path: str | Path, write, suffix: str = ".tmp") -> Path:
    """Call ``write(temporary path)`` on a file in ``path``'s folder, then rename it over ``path``.

    A crash or Ctrl-C leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# ---------------------------------------------------------------------------- readers
# Each reader yields (row, record) pairs; `row` is the 0-based data row, used for default ids.


def read_jsonl(path: str | Path, errors: str = "strict") -> list[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a JSON Lines file; a line that is not JSON is a one-line
    `UserError` naming it. ``errors``: how undecodable bytes are handled (`open`'s argument)."""
    path = Path(path)
    records = []
    with path.open(encoding="utf-8", errors=errors) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append((line_number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise UserError(f"{path.name}:{line_number}: not valid JSON ({error.msg}); fix or remove that line") from None
    return records


def _jsonl_records(path: Path) -> Iterable[tuple[int, Any]]:
    return [(index, record) for index, (_, record) in enumerate(read_jsonl(path))]


def _json_records(path: Path) -> Iterable[tuple[int, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path.name}:{error.lineno}: not valid JSON ({error.msg})") from None
    return list(enumerate(_template_list(data, path)))


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """Parse a YAML file; a missing file, bad bytes or bad syntax is a `UserError` naming the file and line."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {str(path)!r} is a folder: name a YAML file")
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not a UTF-8 text file (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None


def read_yaml_mapping(path: str | Path, what: str = "recipe") -> dict[str, Any]:
    """A YAML file that must hold a mapping of option: value (an empty file is an empty mapping)."""
    data = read_yaml(path, what) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a {what} is a mapping of option: value, got a {type(data).__name__}")
    return data


def _yaml_records(path: Path) -> Iterable[tuple[int, Any]]:
    return list(enumerate(_template_list(read_yaml(path, "pool file"), path)))


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
    source = record.get("source")
    if spreadsheet and isinstance(source, str) and source.startswith("{"):
        try:  # a structured source written back into a spreadsheet cell
            source = json.loads(source)
        except json.JSONDecodeError:
            pass
    template_id = record.get("id")
    template_id = f"{path.stem}-{row}" if template_id in (None, "") else str(template_id)
    split = str(record.get("split") or "train").strip()
    return Template(id=template_id, text=text, split=split, source=source,
                    answer_format=record.get("answer_format"))
