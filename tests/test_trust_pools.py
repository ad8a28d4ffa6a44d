"""Held-out templates can never reach training by accident: pool files have a schema (the fields of `Template`),
and a command that evaluates held-out templates of a pool that has none stops with one line."""

import dataclasses
import json
import re

import pytest

from paft_rl.cli import main
from prompt_pool import Template, UserError, read_pool


def jsonl(path, *records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


TRAIN = {"id": "t0", "text": "Problem: {question}\nAnswer:"}


def misspelt_split_files(tmp_path):
    """The same mistake (a held-out template whose split key is misspelt) in every pool format."""
    yield "Split", "pool.jsonl:2", jsonl(tmp_path / "pool.jsonl", TRAIN, {"id": "h", "text": "H {question}",
                                                                       "Split": "heldout"})
    yield "split_", "pool.json template 2", _write(tmp_path / "pool.json", json.dumps(
        [TRAIN, {"id": "h", "text": "H {question}", "split_": "heldout"}]))
    yield "splitt", "pool.yaml:3", _write(tmp_path / "pool.yaml", "templates:\n  - text: 'Problem: {question}'\n"
                                                                 "  - id: h\n    text: 'H {question}'\n"
                                                                 "    splitt: heldout\n")
    yield "Split", "pool.csv", _write(tmp_path / "pool.csv", "id,text,Split\nt0,Problem: {question},\n"
                                                            "h,H {question},heldout\n")
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.active.append(["text", "SPLIT"])
    book.active.append(["H {question}", "heldout"])
    book.save(tmp_path / "pool.xlsx")
    yield "SPLIT", "pool.xlsx", tmp_path / "pool.xlsx"


def _write(path, text):
    path.write_text(text)
    return path


def test_a_misspelt_split_key_is_refused_in_every_format_with_where_and_the_fix(tmp_path):
    """Before: the key was ignored, the template defaulted to train and `pool validate` said "valid, 0 held-out"."""
    seen = set()
    for key, where, path in misspelt_split_files(tmp_path):
        with pytest.raises(UserError) as caught:
            read_pool(path)
        message = str(caught.value)
        assert message.startswith(where + ":") and repr(key) in message, message
        assert message.endswith("did you mean 'split'?"), message
        assert "\n" not in message
        seen.add(path.suffix)
    assert seen >= {".jsonl", ".json", ".yaml", ".csv"}


def test_pool_validate_names_the_misspelt_key_and_exits_2(tmp_path, capsys):
    path = jsonl(tmp_path / "pool.jsonl", TRAIN, {"id": "h", "text": "H {question}", "Split": "heldout"})
    assert main(["pool", "validate", str(path), "--task", "gsm8k"]) == 2
    assert capsys.readouterr().err.strip() == ("paft-rl pool: error: pool.jsonl:2: unknown key 'Split'; did you mean "
                                               "'split'?")


def test_an_invalid_pool_exits_2_not_1(tmp_path, capsys):
    """Exit status 1 is for bugs; a pool with problems is bad input."""
    path = jsonl(tmp_path / "pool.jsonl", {"id": "a", "text": "{question} {foo}"})
    assert main(["pool", "validate", str(path), "--task", "gsm8k"]) == 2
    assert "unknown field {foo}" in capsys.readouterr().err


@pytest.mark.parametrize("record, message", [
    ({"text": 42}, "pool.jsonl:1: 'text' must be a string (text in quotes), got 42"),
    ({"text": ["Q {question}"]}, "pool.jsonl:1: 'text' must be a string"),
    ({"id": 3, "text": "Q {question}"}, "pool.jsonl:1: 'id' must be a string (text in quotes), got 3"),
    ({"text": "Q {question}", "split": "held-out"}, "pool.jsonl:1: unknown split 'held-out': did you mean 'heldout'?"),
    ({"text": "Q {question}", "split": "test"}, "pool.jsonl:1: unknown split 'test': use 'train' or 'heldout'"),
    ({"text": "Q {question}", "split": True}, "pool.jsonl:1: 'split' must be a string"),
    ({"id": "a"}, "pool.jsonl:1: no 'text'"),
])
def test_values_of_the_wrong_type_are_refused(tmp_path, record, message):
    with pytest.raises(UserError, match="^" + re.escape(message)):
        read_pool(jsonl(tmp_path / "pool.jsonl", record))


@pytest.mark.parametrize("name, content", [
    ("p.jsonl", ""), ("p.jsonl", "\n  \n"), ("p.json", "[]"), ("p.json", '{"templates": []}'), ("p.yaml", ""),
    ("p.yaml", "templates: []\n"), ("p.csv", "text,split\n"), ("p.csv", ""),
])
def test_an_empty_pool_file_is_named_as_empty(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match=rf"^{name} is empty: a pool file holds at least one template"):
        read_pool(tmp_path / name)


def test_top_level_keys_and_headerless_cells_are_refused(tmp_path):
    with pytest.raises(UserError, match="^p.yaml: unknown top-level key 'templats'; did you mean 'templates'"):
        read_pool(_write(tmp_path / "p.yaml", "templats:\n  - 'Q {question}'\n"))
    with pytest.raises(UserError, match="^p.csv line 2: a cell in a column without a header"):
        read_pool(_write(tmp_path / "p.csv", "text\nQ {question},heldout\n"))


def test_the_schema_is_the_fields_of_template(tmp_path, monkeypatch):
    """A field added to `Template` is a key pool files may hold, checked by its annotation, with no other change."""
    import prompt_pool.io

    @dataclasses.dataclass(frozen=True)
    class Wider(Template):
        answer_format: str | None = None

    monkeypatch.setattr(prompt_pool.io, "Template", Wider)
    path = jsonl(tmp_path / "p.jsonl", {"text": "Q {question}", "answer_format": "number"})
    assert read_pool(path).templates[0].answer_format == "number"
    with pytest.raises(UserError, match="'answer_format' must be a string .* or null, got 7"):
        read_pool(jsonl(tmp_path / "p.jsonl", {"text": "Q {question}", "answer_format": 7}))
    with pytest.raises(UserError, match="unknown key 'answer_fromat'; did you mean 'answer_format'"):
        read_pool(jsonl(tmp_path / "p.jsonl", {"text": "Q {question}", "answer_fromat": "number"}))


def test_every_written_format_reads_back_the_same_pool(tmp_path):
    """The writers write only keys the schema accepts (ids, splits, a structured source)."""
    source = {"generator": "m", "mode": "paraphrase"}
    templates = [Template("a", "Q: {question}", "train", source), Template("b", "H {question}", "heldout")]
    from prompt_pool import PromptPool

    pool = PromptPool(templates)
    for suffix in (".jsonl", ".json", ".yaml", ".csv", ".xlsx"):
        if suffix == ".xlsx":
            pytest.importorskip("openpyxl")
        back = read_pool(pool.save(tmp_path / f"p{suffix}"))
        assert back.templates == templates, suffix


def test_spreadsheet_cells_typed_as_numbers_are_text(tmp_path):
    """A spreadsheet types a cell by its look: an id 7 is a number there, and still the id "7"."""
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.active.append(["id", "text", "split"])
    book.active.append([7, "Q {question}", "heldout "])
    book.active.append([None, None, None])
    book.save(tmp_path / "p.xlsx")
    assert read_pool(tmp_path / "p.xlsx").templates == [Template("7", "Q {question}", "heldout")]
