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
    from prompt_pool import PromptPool, write_pool

    pool = PromptPool(templates)
    for suffix in (".jsonl", ".json", ".yaml", ".csv", ".xlsx"):
        if suffix == ".xlsx":
            pytest.importorskip("openpyxl")
        back = read_pool(write_pool(pool, tmp_path / f"p{suffix}"))
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


# ---------------------------------------------------------------------------- nothing held out, nothing evaluated
MC_TRAIN = [{"id": "t0", "text": "{question}\n{options}\nAnswer:"},
            {"id": "t1", "text": "Q: {question} Options: {A} / {B} / {C} / {D}"}]
MC_HELDOUT = {"id": "h0", "text": "<task>{question}</task><options>{options}</options>", "split": "heldout"}


def test_eval_heldout_of_a_pool_without_held_out_templates_stops_with_one_line(tmp_path, capsys):
    """`eval --pool P` evaluates P's held-out templates, the ones its training never drew; P has none."""
    pool = jsonl(tmp_path / "all_train.jsonl", *MC_TRAIN)
    code = main(["eval", "--task", "synth_mc", "--models", str(tmp_path / "no-model-here"), "--out",
                 str(tmp_path / "out"), "--pool", str(pool)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (
        "paft-rl eval: error: pool all_train.jsonl has no held-out templates, so no template unseen in training can "
        "be evaluated: mark some with split heldout (paft-rl pool split), or set templates to train, all or a pool "
        "file")  # before the model path was even looked at
    assert not (tmp_path / "out").exists()


def test_eval_heldout_of_a_pool_evaluates_its_held_out_templates(tmp_path):
    from paft_rl.eval.runner import eval_templates
    from paft_rl.tasks import get_task

    pool = jsonl(tmp_path / "pool.jsonl", *MC_TRAIN, MC_HELDOUT)
    assert [t.id for t in eval_templates(get_task("synth_mc"), "heldout", [], str(pool))] == ["h0"]
    assert [t.id for t in eval_templates(get_task("synth_mc"), "train", [], str(pool))] == ["t0", "t1"]


def test_pool_export_of_the_held_out_templates_of_a_pool_without_any_stops_with_one_line(tmp_path, capsys):
    pool = jsonl(tmp_path / "all_train.jsonl", *MC_TRAIN)
    assert main(["pool", "export", str(pool), "--task", "synth_mc", "--format", "lm-eval", "--out",
                 str(tmp_path / "out"), "--templates", "heldout"]) == 2
    assert capsys.readouterr().err.strip() == (
        "paft-rl pool: error: all_train.jsonl has no held-out templates to export: mark some with split heldout "
        "(paft-rl pool split), or pass --templates all or train")
    assert not (tmp_path / "out").exists()


def test_eval_pool_with_a_pool_file_in_templates_is_refused():
    from paft_rl.eval.runner import EvalSettings
    from paft_rl.settings import SettingError

    with pytest.raises(SettingError, match="^pool names the pool whose split templates picks, but templates is the "
                                           "file 'x.jsonl'"):
        EvalSettings(task="synth_mc", models=["m"], out="o", templates="x.jsonl", pool="p.jsonl")


def test_training_eval_on_a_pool_without_held_out_templates_stops_before_training(tmp_path, tiny_model, capsys):
    pool = jsonl(tmp_path / "all_train.jsonl", *MC_TRAIN)
    code = main(["sft", "--model_name_or_path", str(tiny_model), "--task", "synth_mc", "--pool", str(pool),
                 "--output_dir", str(tmp_path / "run"), "--eval_strategy", "steps", "--eval_steps", "1",
                 "--max_steps", "1", "--report_to", "none"])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    # The message of `paft-rl eval` (one function chooses the templates of both), naming the recipe's option.
    assert code == 2 and len(err) == 1 and ("all_train.jsonl has no held-out templates, so no template unseen in "
                                            "training can be evaluated: mark some with split heldout (paft-rl pool "
                                            "split), or set eval_templates to train, all or a pool file") in err[0]
    assert not (tmp_path / "run").exists()


def test_training_eval_templates_are_chosen_as_paft_rl_eval_chooses_them(tmp_path, tiny_model, capsys):
    """Before: evaluation during training chose its templates with a function of its own, which read a misspelt
    split as a pool file name; `paft-rl eval`'s function suggests the split."""
    pool = jsonl(tmp_path / "pool.jsonl", *MC_TRAIN, MC_HELDOUT)
    code = main(["sft", "--model_name_or_path", str(tiny_model), "--task", "synth_mc", "--pool", str(pool),
                 "--output_dir", str(tmp_path / "run"), "--eval_strategy", "steps", "--eval_steps", "1",
                 "--eval_templates", "heldot", "--max_steps", "1", "--report_to", "none"])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and err == ["paft-rl sft: error: eval_templates 'heldot' is neither a split of the task's pool "
                                 "nor a pool file: did you mean 'heldout'? use heldout, train, all, or the path of a "
                                 "pool file"]
    assert not (tmp_path / "run").exists()


def pipeline_config(tmp_path, model, pool, eval_section=None):
    import yaml

    recipe = {"task": "synth_mc", "model_name_or_path": str(model), "output_dir": str(tmp_path / "sft"),
              "max_steps": 1, "report_to": "none", "pool": str(pool)}
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(recipe))
    config = {"sft": str(tmp_path / "sft.yaml"), "output_dir": str(tmp_path / "run"),
              "eval": eval_section or {"limit": 2}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "p.yaml"


def test_pipeline_evaluates_the_held_out_templates_of_the_pool_it_trains_on(tmp_path, tiny_model, capsys):
    """Before: the pipeline evaluated the built-in pool's held-out templates, whatever pool the recipe trained
    on (a pool holding them as train templates included), and a pool without any trained and evaluated fine."""
    from paft_rl.eval.runner import eval_templates
    from paft_rl.tasks import get_task
    from paft_rl.workflows.pipeline import make_plan, read_pipeline

    path = pipeline_config(tmp_path, tiny_model, jsonl(tmp_path / "pool.jsonl", *MC_TRAIN, MC_HELDOUT))
    _, settings = make_plan(read_pipeline(path, log=lambda *_: None)).evaluations["eval"]
    assert settings.pool == str(tmp_path / "pool.jsonl")
    assert [t.id for t in eval_templates(get_task("synth_mc"), settings.templates, settings.field_aliases,
                                         settings.pool)] == ["h0"]

    path = pipeline_config(tmp_path, tiny_model, jsonl(tmp_path / "all_train.jsonl", *MC_TRAIN))
    assert main(["pipeline", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paft-rl pipeline: error: stage eval: pool all_train.jsonl has no held-out templates")
    assert "\n" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "sft").exists()  # nothing trained

    path = pipeline_config(tmp_path, tiny_model, tmp_path / "pool.jsonl", {"pool": "synth_mc"})
    assert main(["pipeline", "--config", str(path)]) == 2
    assert "evaluate.pool is 'synth_mc' but the stages train on" in capsys.readouterr().err


def test_sequence_evaluates_each_task_on_the_held_out_templates_of_its_pool(tmp_path, tiny_model, capsys):
    import yaml

    pool = jsonl(tmp_path / "all_train.jsonl", *MC_TRAIN)
    config = {"model_name_or_path": str(tiny_model), "output_dir": str(tmp_path / "seq"),
              "sft": {"max_steps": 1, "data_limit": 8}, "select": {"rows": 2},
              "tasks": [{"task": "synth_arith"}, {"task": "synth_mc", "sft": {"pool": str(pool)}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    assert main(["sequence", "--config", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paft-rl sequence: error: s.yaml.tasks[1] (synth_mc) evaluation: pool all_train.jsonl has "
                          "no held-out templates") and "\n" not in err
    assert not (tmp_path / "seq").exists()
    config["eval"] = {"pool": str(pool)}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    assert main(["sequence", "--config", str(tmp_path / "s.yaml")]) == 2
    assert "eval.pool is set by the sequence" in capsys.readouterr().err


# ---------------------------------------------------------------------------- one spelling per flag
def test_field_aliases_is_spelt_the_same_in_every_command(tmp_path, capsys):
    """Before: `pool validate|render|export --field-alias A=B` (repeated), `eval --field_aliases A=B ...`,
    recipes `field_aliases`; and `pool validate --drop-duplicates` for recipes' `drop_duplicate_templates`."""
    from paft_rl.commands.eval import parse_eval_settings

    pool = jsonl(tmp_path / "pool.jsonl", {"id": "t", "text": "{prompt} {extra}"},
                 {"id": "u", "text": "Q: {prompt} {extra}"}, {"id": "u2", "text": "Q: {prompt}  {extra}"})
    for spelling in ("--field_aliases", "--field-aliases"):
        argv = ["pool", "validate", str(pool), "--task", "gsm8k", spelling, "prompt=question", "extra=question",
                "--drop_duplicate_templates"]
        assert main(argv) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "valid for task 'gsm8k': 2 templates, 2 train, 0 held-out (1 duplicate(s) dropped)" in out
        assert main(["pool", "render", str(pool), "--task", "gsm8k", "--data", str(gsm8k_rows(tmp_path)), "--index",
                     "0", "--template", "u", spelling, "prompt=question", "extra=question"]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "Q: What is 2+2? What is 2+2?"
        assert parse_eval_settings(["--models", "m", "--task", "gsm8k", "--out", "o", spelling, "prompt=question",
                                    "extra=question"]).field_aliases == ["prompt=question", "extra=question"]
    # The spellings of an unreleased version are no options: argparse's one line (no usage, no shim).
    assert main(["pool", "validate", str(pool), "--task", "gsm8k", "--drop-duplicates"]) == 2
    assert capsys.readouterr().err.strip() == "paft-rl pool: error: unrecognized arguments: --drop-duplicates"


def gsm8k_rows(tmp_path):
    return jsonl(tmp_path / "gsm8k.jsonl", {"question": "What is 2+2?", "answer": "2+2=4\n#### 4"})
