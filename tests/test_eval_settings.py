"""`paft-rl eval` options through the one settings reader: file and flags alike, each value checked once."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from paft_rl import cli
from paft_rl.commands.eval import parse_eval_settings
from paft_rl.eval import EvalSettings
from paft_rl.eval.budget import budget_cells
from paft_rl.eval.runner import check_settings
from paft_rl.settings import SettingError, option
from prompt_pool import UserError

BASE = ["--task", "synth_mc", "--out", "o"]


def config(tmp_path, text: str) -> list[str]:
    path = tmp_path / "eval.yaml"
    path.write_text(text)
    return ["--config", str(path)]


def test_file_and_flags_give_the_same_settings_and_flags_win(tmp_path):
    from_file = parse_eval_settings(config(tmp_path, "task: synth_mc\nmodels: [a, b]\nout: o\nlimit: 5\n"
                                                     "prompt_format: chat\nsystem_prompt: You are terse.\n"
                                                     "share_prefix: false\nlabels: [x, y]\n"))
    from_flags = parse_eval_settings(["--models", "a", "b", *BASE, "--limit", "5", "--prompt_format", "chat",
                                      "--system_prompt", "You are terse.", "--no_share_prefix", "--labels", "x", "y"])
    assert from_file == from_flags
    assert from_file.share_prefix is False and from_file.system_prompt == "You are terse."
    overridden = parse_eval_settings([*config(tmp_path, "task: synth_mc\nmodels: [a]\nout: o\nlimit: 5\n"),
                                      "--limit", "2"])
    assert overridden.limit == 2 and overridden.models == ["a"]


def test_model_alias_and_old_dashed_spellings_still_work():
    settings = parse_eval_settings(["--model", "a", *BASE, "--max-new-tokens", "3", "--batch-size", "2",
                                    "--prompt-format", "plain", "--field-aliases", "question=q", "--no-progress"])
    assert settings.models == ["a"] and settings.max_new_tokens == 3 and settings.batch_size == 2
    assert settings.prompt_format == "plain" and settings.field_aliases == ["question=q"]
    assert settings.progress is False and settings.share_prefix is True


@pytest.mark.parametrize("argv, message", [
    (["--model", "a", "--model", "b"], "--model is given twice: list every value after one --model (--models A B)"),
    # Spellings of an unreleased argparse version are options like any other unknown one (one spelling each).
    (["--models", "a", "--no-prefix-sharing"], "command line: unknown option '--no-prefix-sharing'"),
    (["--models", "a", "--field-alias", "x=y"],
     "command line: unknown option '--field-alias'; did you mean '--field_aliases'?"),
    (["--models", "a", "--no-chat-template"], "command line: unknown option '--no-chat-template'"),
    (["--models", "a", "--limt", "2"], "command line: unknown option '--limt'; did you mean '--limit'?"),
    (["--models", "a", "--limit", "0"], "option limit must be a positive number, got 0"),
    (["--models", "a", "--threads", "-1"], "option threads must be a positive number, got -1"),
    (["--models", "a", "--backend", "vlm"], "option backend: invalid choice: 'vlm'"),
    (["--models", "a", "--top_threshold", "1.5"], "option top_threshold is an accuracy between 0 and 1, got 1.5"),
    (["--models", "a", "--target_error", "0"], "option target_error is an interval width between 0 and 1"),
    (["--models", "a", "--scoring", "loglik", "--backend", "vllm"],
     "option scoring loglik runs on the hf backend; set backend hf"),
])
def test_bad_flags_are_one_line(argv, message):
    with pytest.raises(UserError) as error:
        parse_eval_settings([*argv, *BASE])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("limt: 2\n", "eval.yaml: unknown option 'limt'; did you mean 'limit'?"),
    ("limit: 0\n", "option limit must be a positive number, got 0"),
    ("dtype: float64\n", "option dtype must be one of auto, float32, bfloat16, float16, got 'float64'"),
    ("models: a\n", "option models must be a list, got 'a'"),
    ("budget: [1]\n", "option budget has the wrong type: [1]"),
])
def test_bad_file_keys_and_values_are_one_line(tmp_path, text, message):
    with pytest.raises(UserError) as error:
        parse_eval_settings(config(tmp_path, "task: synth_mc\nmodels: [a]\nout: o\n" + text))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("where, value, cells", [("flag", "10%", 100), ("flag", "0.1", 100), ("flag", "500", 500),
                                                 ("file", "500", 500), ("file", "0.1", 100), ("file", "'10%'", 100)])
def test_budget_is_read_from_flags_and_files(tmp_path, where, value, cells):
    if where == "flag":
        settings = parse_eval_settings(["--models", "a", *BASE, "--budget", value])
    else:
        settings = parse_eval_settings(config(tmp_path, f"task: synth_mc\nmodels: [a]\nout: o\nbudget: {value}\n"))
    assert budget_cells(settings.budget, 20, 50) == cells  # a 1000-cell grid


def test_what_needs_the_models_is_checked_when_the_evaluation_starts():
    @dataclass
    class Section(EvalSettings):  # a workflow's eval section: the workflow fills in models and out later
        models: list[str] = option(help="filled in by the workflow", default_factory=list)
        out: str = option("", help="filled in by the workflow")

    section = Section(task="synth_mc", limit=3)
    with pytest.raises(UserError, match="pass at least one model"):
        check_settings(section)
    with pytest.raises(UserError, match="the same model is given twice"):
        check_settings(EvalSettings(task="synth_mc", models=["a", "a"], out="o"))
    with pytest.raises(SettingError, match="limit must be a positive number"):
        Section(task="synth_mc", limit=0)


def test_help_lists_every_option_once_with_its_default(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["eval", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "paft-rl eval --config eval.yaml" in text and "(default: None)" not in text
    for name in EvalSettings.__dataclass_fields__:
        assert f"--{name}" in text
    assert "--no_share_prefix" in text and "(default: heldout)" in text and "(default: 64)" in text
