"""Reading and writing pool files.

JSONL is the native format (one ``{"id", "text", "split", "source"}`` object a line). YAML, JSON, CSV and
XLSX are read too: PAFT published its pools as spreadsheets with a single ``text`` column whose cells hold
literal ``\\n`` sequences, so those become newlines for spreadsheet formats only.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, short_value, unknown_key_error
from .pool import SPLITS, PromptPool, Template

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
    raise UserError(f"pool {str(spec)!r} is neither a file nor a built-in pool "
                    f"(built-in: {', '.join(builtin_names())})")


def read_pool(path: str | Path) -> PromptPool:
    """Read a pool file; the format follows the file extension.

    Every record is checked against the fields of `Template`: a key no template has (``"Split"``, ``splitt``,
    a CSV column ``Split``) is refused with the closest known key, so a misspelt ``split`` can never send a
    held-out template to training; so are values of the wrong type and a split other than train / heldout.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{str(path)!r} is a folder: name a pool file ({', '.join(READERS)}) instead")
    if not path.is_file():
        raise UserError(f"pool file {str(path)!r} does not exist")
    kind = pool_format(path)
    readers = {"jsonl": _jsonl_records, "json": _json_records, "yaml": _yaml_records, "csv": _csv_records,
               "xlsx": _xlsx_records}
    try:
        records = [] if kind != "xlsx" and is_blank(path) else readers[kind](path)
    except UnicodeDecodeError as error:
        raise UserError(f"{path.name}: not a UTF-8 text file (byte {error.start}); a {kind} pool is text with one "
                        "template per record") from None
    if not records:
        raise UserError(f"{path.name} is empty: a pool file holds at least one template ({EMPTY_HINTS[kind]})")
    spreadsheet = kind in ("csv", "xlsx")
    templates = [_template(record, where, f"{path.stem}-{row}", spreadsheet)
                 for row, (where, record) in enumerate(records)]
    return PromptPool(templates, name=path.name)


EMPTY_HINTS = {
    "jsonl": 'one {"id": ..., "text": ..., "split": "train" or "heldout"} object a line',
    "json": 'a list of {"id": ..., "text": ..., "split": "train" or "heldout"} objects',
    "yaml": "a list of templates, or a mapping with a 'templates' list",
    "csv": "a header with a 'text' column, then one template a row",
    "xlsx": "a header with a 'text' column, then one template a row",
}


def is_blank(path: str | Path) -> bool:
    """Whether a file holds nothing but whitespace (read in chunks: a big file costs no memory)."""
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.strip():
                return False
    return True


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

    A crash or Ctrl-C leaves either the old file or the new one, never half of one. The file gets the mode any
    new file gets under the user's umask (``mkstemp`` creates it private, 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, created_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def created_mode(folder: bool = False) -> int:
    """The mode a new file (``0o666``) or folder (``0o777``) gets under the process's umask, as ``open`` and
    ``mkdir`` create them: for files and folders made private first (``mkstemp``, ``mkdtemp``) and then kept."""
    umask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# ---------------------------------------------------------------------------- readers
# Each pool reader returns (where, record) pairs: `where` names the record in messages (`pool.jsonl:3`,
# `pool.csv line 4`), `record` is what the file holds for one template.


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
                raise UserError(f"{path.name}:{line_number}: not valid JSON ({error.msg}); "
                                "fix or remove that line") from None
    return records


def _jsonl_records(path: Path) -> list[tuple[str, Any]]:
    return [(f"{path.name}:{line}", record) for line, record in read_jsonl(path)]


def _json_records(path: Path) -> list[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path.name}:{error.lineno}: not valid JSON ({error.msg})") from None
    return [(f"{path.name} template {i + 1}", record) for i, record in enumerate(_template_list(data, path))]


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


def _yaml_records(path: Path) -> list[tuple[str, Any]]:
    records = _template_list(read_yaml(path, "pool file"), path)
    return list(zip(_yaml_item_lines(path, len(records)), records))


def _yaml_item_lines(path: Path, count: int) -> list[str]:
    """``file:line`` of each template of a YAML pool (read from the node tree, which keeps positions)."""
    node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    if isinstance(node, yaml.MappingNode):
        node = next(value for key, value in node.value if key.value == "templates")
    lines = [f"{path.name}:{item.start_mark.line + 1}" for item in node.value] if isinstance(
        node, yaml.SequenceNode) else []
    return lines if len(lines) == count else [f"{path.name} template {i + 1}" for i in range(count)]


POOL_FILE_KEYS = ("templates", "version")  # a YAML / JSON pool may be a mapping with these keys


def _template_list(data: Any, path: Path) -> list:
    if isinstance(data, dict):
        for key in data:
            if key not in POOL_FILE_KEYS:
                raise unknown_key_error(key, POOL_FILE_KEYS, path.name, "top-level key")
        data = data.get("templates", [])
    if data is None:
        return []
    if not isinstance(data, list):
        raise UserError(f"{path.name}: expected a list of templates (or a mapping with a 'templates' list)")
    return data


def _csv_records(path: Path) -> list[tuple[str, Any]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, restkey=EXTRA_CELLS)
        _check_header(reader.fieldnames or [], path)
        records = []
        for row in reader:
            extra = row.pop(EXTRA_CELLS, [])
            record = _cells([*row.items(), *(("", value) for value in extra)])
            if record:  # a row of empty cells is no template
                records.append((f"{path.name} line {reader.line_num}", record))
        return records


def _xlsx_records(path: Path) -> list[tuple[str, Any]]:
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises several unrelated types for a damaged file
        raise UserError(f"{path.name}: cannot read spreadsheet ({error})") from None
    rows = workbook.worksheets[0].iter_rows(values_only=True)
    header = [str(cell).strip() if cell is not None else "" for cell in next(rows, [])]
    _check_header(header, path)
    records = []
    for number, values in enumerate(rows, start=2):
        record = _cells([*zip(header, values), *(("", value) for value in values[len(header):])])
        if record:  # trailing empty rows are common in spreadsheets
            records.append((f"{path.name} row {number}", record))
    workbook.close()
    return records


EXTRA_CELLS = "(a column without a header)"


def _cells(pairs) -> dict[str, Any]:
    """A spreadsheet row's non-empty cells by column name; a cell under no header is kept, to be refused."""
    return {name or EXTRA_CELLS: value for name, value in pairs if value not in (None, "")}


def _check_header(header: list[str], path: Path) -> None:
    """A spreadsheet's columns: a ``text`` column, and no column a template does not have."""
    if "text" not in header:
        raise UserError(f"{path.name}: no 'text' column (columns: {', '.join(h for h in header if h) or 'none'})")
    for name in header:
        if name and name not in template_keys():
            raise unknown_key_error(name, template_keys(), path.name, "column")


def template_keys() -> list[str]:
    """The keys a pool record may have: the fields of `Template`, whatever fields it declares."""
    return [f.name for f in dataclasses.fields(Template)]


def _template(record: Any, where: str, default_id: str, spreadsheet: bool) -> Template:
    """The `Template` of one record, checked against `Template`'s fields (names, types, split)."""
    if isinstance(record, str):
        record = {"text": record}
    if not isinstance(record, dict):
        raise UserError(f"{where}: a template is a {type(record).__name__}, expected an object with 'text' (or a "
                        "string)")
    for key in record:
        if key == EXTRA_CELLS:
            raise UserError(f"{where}: a cell in a column without a header: name the column or empty the cell")
        if key not in template_keys():
            raise unknown_key_error(key, template_keys(), where)
    if "text" not in record:
        raise UserError(f"{where}: no 'text'; every template needs one")
    hints = typing.get_type_hints(Template)
    values = {}
    for key, value in record.items():
        if spreadsheet and not isinstance(value, str) and _accepts(hints[key], "text"):
            value = str(value)  # a spreadsheet types a cell by its look (an id 7 becomes a number)
        if not _accepts(hints[key], value):
            raise UserError(f"{where}: {key!r} must be {_type_name(hints[key])}, got {short_value(value)}")
        values[key] = value
    if spreadsheet:
        values["text"] = values["text"].replace("\\n", "\n")
        source = values.get("source")
        if isinstance(source, str) and source.startswith("{"):
            try:  # a structured source written back into a spreadsheet cell
                values["source"] = json.loads(source)
            except json.JSONDecodeError:
                pass
    if values.get("id") in (None, ""):
        values["id"] = default_id
    if "split" in values:
        values["split"] = _split(values["split"], where)
    return Template(**values)


def _split(value: str, where: str) -> str:
    split = value.strip()
    if split not in SPLITS:
        close = difflib.get_close_matches(split.lower(), SPLITS, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"{where}: unknown split {value!r}: {hint}use 'train' or 'heldout'")
    return split


def _accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` fits a `Template` field's annotation (``str``, ``str | None``, ``Literal``, ``Any``)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(member, value) for member in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if isinstance(hint, type):
        return isinstance(value, hint) and not (isinstance(value, bool) and hint is not bool)
    return True


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(member) for member in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(hint))
    names = {str: "a string (text in quotes)", type(None): "null", int: "a whole number", float: "a number",
             bool: "true or false"}
    return names.get(hint, str(hint))
