"""Workflow stages notice change: same settings skip, other settings rerun (and so do later stages), an
interrupted stage resumes, and a folder the workflow did not write is refused."""

from __future__ import annotations

import json

import pytest

from paft_rl.stages import MARKER, STARTED, run_stage
from prompt_pool import UserError


class Work:
    """A stage body that records how it was called."""

    def __init__(self, result="model-1"):
        self.calls: list[bool] = []
        self.result = result

    def __call__(self, resume: bool) -> dict:
        self.calls.append(resume)
        return {"model": self.result}


def test_same_settings_skip_other_settings_rerun(tmp_path):
    log: list[str] = []
    first = Work()
    done = run_stage("sft", tmp_path / "sft", first, {"max_steps": 1, "lr": 1e-3}, log.append)
    assert first.calls == [False] and done["model"] == "model-1"
    (tmp_path / "sft" / "checkpoint-1").mkdir()  # output of the 1-step run
    again = Work()
    assert run_stage("sft", tmp_path / "sft", again, {"max_steps": 1, "lr": 1e-3}, log.append)["model"] == "model-1"
    assert again.calls == [] and "already done" in log[-1]
    changed = Work("model-3")
    summary = run_stage("sft", tmp_path / "sft", changed, {"max_steps": 3, "lr": 1e-3}, log.append)
    assert changed.calls == [False] and summary["model"] == "model-3"
    assert any("settings changed (max_steps: 1 -> 3)" in line for line in log)
    assert not (tmp_path / "sft" / "checkpoint-1").exists()  # the stale run's output is gone
    assert json.loads((tmp_path / "sft" / MARKER).read_text())["settings"]["max_steps"] == 3


def test_a_changed_stage_reruns_the_stages_after_it(tmp_path):
    def pipeline(steps):
        sft = run_stage("sft", tmp_path / "sft", Work(f"sft-{steps}"), {"max_steps": steps}, lambda _: None)
        grpo_work = Work("grpo")
        run_stage("grpo", tmp_path / "grpo", grpo_work, {"lr": 1e-5, "after": sft["fingerprint"]}, lambda _: None)
        return grpo_work.calls

    assert pipeline(1) == [False]
    assert pipeline(1) == []  # nothing changed
    assert pipeline(2) == [False]  # only SFT's settings changed, yet GRPO starts from another model


def test_interrupted_stage_resumes_with_the_same_settings_only(tmp_path):
    folder = tmp_path / "sft"

    def interrupted(resume):
        (folder / "checkpoint-2").mkdir()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage("sft", folder, interrupted, {"max_steps": 4}, lambda _: None)
    assert (folder / STARTED).is_file() and not (folder / MARKER).exists()
    resumed = Work()
    run_stage("sft", folder, resumed, {"max_steps": 4}, lambda _: None)
    assert resumed.calls == [True]


def test_folder_the_workflow_did_not_write_is_refused(tmp_path):
    folder = tmp_path / "sft"
    folder.mkdir()
    (folder / "my_notes.txt").write_text("keep")
    with pytest.raises(UserError, match="did not write"):
        run_stage("sft", folder, Work(), {"max_steps": 1}, lambda _: None)
    assert (folder / "my_notes.txt").read_text() == "keep"



def test_a_changed_template_with_a_line_break_is_named_on_one_line():
    from paft_rl.stages import changed_settings

    before, now = {"recipe": {"fixed_template": "Q: {goal}\nA:"}}, {"recipe": {"fixed_template": "{goal}"}}
    (change,) = changed_settings(before, now)
    assert change == 'recipe.fixed_template: "Q: {goal}\\nA:" -> {goal}'
