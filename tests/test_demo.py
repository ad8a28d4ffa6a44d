"""`paft-rl demo` on a tiny model: the evaluation judges with the prompt settings the recipes train with, and a
rerun with more steps trains again instead of reusing the shorter run's models."""

from __future__ import annotations

import json

import pytest
import yaml
from tiny import make_tiny_model_dir

from paft_rl.cli import main
from paft_rl.workflows import demo

SYSTEM_PROMPT = "Reply with the option text."


def demo_argv(model, out, *extra):
    return ["demo", "--model", str(model), "--out", str(out), "--sft-steps", "1", "--grpo_steps", "1", "--rows", "8",
            "--questions", "2", "--bf16", "false", "--threads", "1", *extra]


@pytest.mark.slow
def test_demo_evaluates_with_its_recipes_prompts_and_reruns_changed_stages(tmp_path, monkeypatch, capsys):
    from transformers import AutoTokenizer

    from paft_rl.eval.runner import EvalSettings, build_cells, eval_templates
    from paft_rl.formatting import PromptFormat, prompt_text
    from paft_rl.tasks import get_task

    # The recipes are the one source: give them a system prompt, and the evaluation must use it.
    pipeline = yaml.safe_load(open(demo.demo_file()))
    for stage in pipeline["stages"]:
        if "recipe" in stage:
            stage["recipe"] = {**stage["recipe"], "system_prompt": SYSTEM_PROMPT, "prompt_format": "chat"}
    changed = tmp_path / "demo.yaml"
    changed.write_text(yaml.safe_dump(pipeline))
    monkeypatch.setattr(demo, "demo_file", lambda: str(changed))
    model, out = make_tiny_model_dir(tmp_path / "model"), tmp_path / "demo"
    assert main(demo_argv(model, out)) == 0
    capsys.readouterr()
    for name in ("fixed_sft", "paft_sft", "paft_grpo"):
        assert yaml.safe_load((out / "recipes" / f"{name}.yaml").read_text())["system_prompt"] == SYSTEM_PROMPT

    records = [json.loads(line) for line in (out / "eval" / "generations.jsonl").read_text().splitlines()]
    task = get_task("synth_mc")
    cells = build_cells(task, eval_templates(task, "heldout", []),
                        EvalSettings(task="synth_mc", models=["m"], out="x", limit=2))
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    trainer_text = {(c.template, c.row): prompt_text(tokenizer, PromptFormat(True, SYSTEM_PROMPT).build(c.prompt))
                    for c in cells}
    labels = {"base", "fixed template SFT", "PAFT SFT", "PAFT SFT + GRPO"}
    assert {r["label"] for r in records} == labels and len(records) == 4 * len(cells)
    for label in labels:
        assert {(r["template"], r["row_id"]): r["prompt"] for r in records if r["label"] == label} == trainer_text
    assert all(SYSTEM_PROMPT in r["prompt"] for r in records)

    # Same options: every stage is reused. More SFT steps: both SFT stages, and all after them, run again.
    assert main(demo_argv(model, out)) == 0
    assert capsys.readouterr().out.count("already done") == 5  # two SFT, merge, GRPO, eval
    assert main(demo_argv(model, out, "--sft-steps", "2")) == 0
    printed = capsys.readouterr().out
    assert printed.count("settings changed (recipe.max_steps: 1 -> 2") == 2 and "already done" not in printed
    state = json.loads((out / "paft_sft" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == 2


@pytest.mark.slow
def test_a_run_folder_taken_to_a_cpu_without_native_bf16_trains_again(tmp_path, monkeypatch, capsys):
    """The recipes are the same, but paft-rl picks bf16 on one CPU and fp32 on the other: models are not reused."""
    from paft_rl import precision

    def on_cpu(native_bf16: bool):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native_bf16)
        monkeypatch.setattr(precision, "_ANNOUNCED", set())

    model, out = make_tiny_model_dir(tmp_path / "model"), tmp_path / "demo"
    argv = [a for a in demo_argv(model, out, "--grpo_steps", "0") if a not in ("--bf16", "false")] + ["--bf16", "auto"]
    on_cpu(True)
    assert main(argv) == 0
    assert "training in bf16" in capsys.readouterr().err
    assert main(argv) == 0
    assert capsys.readouterr().out.count("already done") == 3  # two SFT stages and the evaluation
    on_cpu(False)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("settings changed (precision: bf16 -> fp32") == 2 and "already done" not in printed
