"""Output locations are checked before any work, earlier results are never replaced unasked, files get the user's
umask, and training says where its model went (or, interrupted, how to continue)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from paft_rl.cli import main as cli
from tests.tiny import make_tiny_model_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def no_model_loads(monkeypatch):
    """Loading weights fails the test: a refusal must come before it (the CLI would exit 1, not 2)."""
    from transformers import AutoModelForCausalLM

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the output location was checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


def run(capsys, *argv) -> tuple[int, str]:
    """The CLI in-process: (exit status, stderr)."""
    code = cli([str(a) for a in argv])
    return code, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


def command_lines(model, tmp_path, out: Path) -> dict[str, list]:
    """Each command, writing to ``out``."""
    recipe = {"model_name_or_path": str(model), "task": "synth_mc", "output_dir": str(tmp_path / "sft"),
              "report_to": "none", "max_steps": 1}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({"sft": str(tmp_path / "recipe.yaml"),
                                                            "output_dir": str(out)}))
    (tmp_path / "sequence.yaml").write_text(yaml.safe_dump({"model_name_or_path": str(model), "output_dir": str(out),
                                                            "tasks": [{"task": "synth_mc"}]}))
    generate = {"task": {"name": "quiz", "description": "Answer a quiz question.", "fields": ["question"]},
                "modes": ["zero_shot"], "per_model_per_mode": 2, "templates_per_request": 2,
                "generators": [{"name": "alpha", "model": "alpha", "base_url": "http://127.0.0.1:9/v1"}]}
    (tmp_path / "gen.yaml").write_text(json.dumps(generate))
    return {
        "eval": ["eval", "--models", model, "--task", "synth_mc", "--limit", "2", "--out", out],
        "sft": ["sft", "--model_name_or_path", model, "--task", "synth_arith", "--output_dir", out, "--report_to",
                "none", "--max_steps", "1"],
        "grpo": ["grpo", "--model_name_or_path", model, "--task", "synth_arith", "--output_dir", out, "--report_to",
                 "none", "--max_steps", "1"],
        "select": ["select", "--config", tmp_path / "recipe.yaml", "--rows", "2", "--out", out],
        "pipeline": ["pipeline", "--config", tmp_path / "pipeline.yaml"],
        "sequence": ["sequence", "--config", tmp_path / "sequence.yaml"],
        "demo": ["demo", "--model", model, "--out", out],
        "pool split": ["pool", "split", "gsm8k", "--heldout_fraction", "0.3", "--seed", "0", "--out",
                       out / "pool.jsonl"],
        "pool export": ["pool", "export", "synth_mc", "--task", "synth_mc", "--format", "lm-eval", "--out", out],
        "pool generate": ["pool", "generate", "--config", tmp_path / "gen.yaml", "--out", out / "pool.jsonl"],
    }


COMMANDS = ["eval", "sft", "grpo", "select", "pipeline", "sequence", "demo", "pool split", "pool export",
            "pool generate"]


# ---------------------------------------------------------------------------- output locations, before any work
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_under_a_file_is_refused_first(command, model, tmp_path, capsys, no_model_loads):
    """Before, most of these failed after the work (or the model load) with NotADirectoryError, exit 1."""
    blocker = tmp_path / "results.txt"
    blocker.write_text("mine\n")
    code, err = run(capsys, *command_lines(model, tmp_path, blocker / "out")[command])
    assert code == 2, err
    assert len(error_lines(err)) == 1 and f"cannot be created: {blocker} is a file, not a folder" in err
    assert blocker.read_text() == "mine\n"


@pytest.fixture
def shared_folder(model):
    """A folder every user can read, holding a copy of the model (``model``) and a folder nobody but root may write
    in (``read-only``)."""
    base = Path(tempfile.mkdtemp())
    base.chmod(0o755)
    shutil.copytree(model, base / "model")
    (base / "read-only").mkdir()
    (base / "read-only").chmod(0o555)
    yield base
    (base / "read-only").chmod(0o755)
    shutil.rmtree(base)


@contextmanager
def as_ordinary_user():
    """Root writes anywhere, read-only folders included: as root, act as the user nobody meanwhile."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.mark.parametrize("command", ["eval", "sft", "select", "demo", "pool split", "pool export"])
def test_a_read_only_output_is_refused_first(command, shared_folder, capsys, no_model_loads):
    """Before, a PermissionError came after the model loaded (eval, select) or trained (sft: on save), exit 1."""
    folder = shared_folder / "read-only"
    argv = command_lines(shared_folder / "model", shared_folder, folder / "out")[command]
    with as_ordinary_user():
        code, err = run(capsys, *argv)
    assert code == 2, err
    assert len(error_lines(err)) == 1 and f"is not writable ({folder} is not)" in err


# ---------------------------------------------------------------------------- earlier results are kept unless asked
def test_a_finished_model_in_output_dir_is_kept_unless_overwrite(model, tmp_path, capsys, no_model_loads):
    """Before, a folder holding a finished model (no checkpoints) was trained over without a word."""
    out = shutil.copytree(model, tmp_path / "out")
    before = (out / "model.safetensors").read_bytes()
    code, err = run(capsys, "sft", "--model_name_or_path", model, "--task", "synth_arith", "--output_dir", out,
                    "--report_to", "none", "--max_steps", "1")
    assert code == 2 and "already holds a trained model (model.safetensors, config.json)" in err
    assert "--overwrite true" in err and (out / "model.safetensors").read_bytes() == before


def test_training_says_where_the_model_went_and_how_to_resume(model, tmp_path, capsys, monkeypatch):
    """Before, a finished training printed nothing about its output, and Ctrl-C only 'interrupted'."""
    from transformers.trainer_callback import CallbackHandler

    out = shutil.copytree(model, tmp_path / "out")  # a finished model, replaced as asked
    argv = ["sft", "--model_name_or_path", model, "--task", "synth_arith", "--data_limit", "8", "--output_dir", out,
            "--overwrite", "true", "--report_to", "none", "--max_steps", "3", "--save_steps", "1",
            "--per_device_train_batch_size", "2", "--bf16", "false", "--max_length", "256"]
    on_save = CallbackHandler.on_save

    def stop_after_second_checkpoint(self, args, state, control):
        control = on_save(self, args, state, control)
        if state.global_step == 2:
            raise KeyboardInterrupt
        return control

    monkeypatch.setattr(CallbackHandler, "on_save", stop_after_second_checkpoint)
    code, err = run(capsys, *argv)
    assert code == 130
    assert (f"the last checkpoint is {out / 'checkpoint-2'}: add --resume_from_checkpoint true --overwrite false to "
            "the same command to continue from it") in err
    monkeypatch.setattr(CallbackHandler, "on_save", on_save)
    on_step_end, steps = CallbackHandler.on_step_end, []

    def count(self, args, state, control):
        steps.append(state.global_step)
        return on_step_end(self, args, state, control)

    monkeypatch.setattr(CallbackHandler, "on_step_end", count)
    assert cli([str(a) for a in argv] + ["--resume_from_checkpoint", "true", "--overwrite", "false"]) == 0
    assert f"paft-rl sft: saved the model and its tokenizer in {out} (after 3 steps)" in capsys.readouterr().out
    assert steps == [3]  # continued from checkpoint-2: one step left


def test_training_interrupted_before_a_checkpoint_says_there_is_nothing_to_resume(model, tmp_path, capsys,
                                                                                     monkeypatch):
    from transformers.trainer_callback import CallbackHandler

    def stop(self, args, state, control):
        raise KeyboardInterrupt

    monkeypatch.setattr(CallbackHandler, "on_step_end", stop)
    code, err = run(capsys, "sft", "--model_name_or_path", model, "--task", "synth_arith", "--data_limit", "8",
                    "--output_dir", tmp_path / "out", "--report_to", "none", "--max_steps", "3",
                    "--per_device_train_batch_size", "2", "--bf16", "false", "--max_length", "256")
    assert code == 130 and "before any checkpoint was saved" in err and "run the same command again" in err


def test_select_into_earlier_results_needs_force(model, tmp_path, capsys):
    """Before, a second selection replaced the first one's scores and recipe silently."""
    argv = command_lines(model, tmp_path, tmp_path / "sel")["select"]
    assert run(capsys, *argv)[0] == 0
    written = {p.name: p.read_bytes() for p in (tmp_path / "sel").iterdir()}
    code, err = run(capsys, *argv)
    assert code == 2 and "earlier results are in --out" in err and "pass --force" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "sel").iterdir()} == written
    assert run(capsys, *argv, "--force")[0] == 0


def test_pool_export_into_an_earlier_export_needs_force_and_leaves_no_stale_task(tmp_path, capsys):
    """Before, a second export replaced the first silently and left its other templates' task files beside it."""
    out = tmp_path / "lm"
    export = ["pool", "export", "synth_mc", "--task", "synth_mc", "--format", "lm-eval", "--out", out, "--limit", "2"]
    assert run(capsys, *export, "--templates", "all")[0] == 0
    (out / "notes.yaml").write_text("mine: true\n")
    everything = sorted(p.name for p in out.iterdir())
    code, err = run(capsys, *export, "--templates", "heldout")
    assert code == 2 and "earlier results are in --out" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == everything
    assert run(capsys, *export, "--templates", "heldout", "--force")[0] == 0
    group = yaml.safe_load((out / "_paft_synth_mc.yaml").read_text())
    tasks = sorted(p.stem for p in out.glob("paft_synth_mc_*.yaml"))
    assert tasks == sorted(group["task"]) and len(tasks) == 10  # the held-out templates only
    assert (out / "notes.yaml").read_text() == "mine: true\n"  # not an export's file
    # Another group beside it reads the same questions: nothing of the first is replaced, so no --force.
    assert run(capsys, *export, "--group", "second")[0] == 0
    assert (out / "_paft_synth_mc.yaml").is_file() and (out / "_second.yaml").is_file()
    # Other questions would change what the groups already there read.
    code, err = run(capsys, *export[:-1], "3", "--group", "third")
    assert code == 2 and "docs.jsonl" in err and not (out / "_third.yaml").exists()


def test_pool_generate_into_an_earlier_pool_needs_force(model, tmp_path, capsys):
    out = tmp_path / "pool.jsonl"
    out.write_text("an earlier pool\n")
    code, err = run(capsys, *command_lines(model, tmp_path, tmp_path)["pool generate"][:-1], out)
    assert code == 2 and "earlier results are in --out" in err and "--force" in err
    assert out.read_text() == "an earlier pool\n"


# ---------------------------------------------------------------------------- the user's umask
@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_written_files_follow_the_umask(umask, tmp_path, capsys):
    """Before, files written through a temporary file were 0600 whatever the umask."""
    from paft_rl.stages import MARKER, run_stage

    previous = os.umask(umask)
    try:
        assert run(capsys, "pool", "split", "gsm8k", "--heldout_fraction", "0.3", "--seed", "0", "--out",
                   tmp_path / "split.jsonl")[0] == 0
        assert run(capsys, "pool", "export", "synth_mc", "--task", "synth_mc", "--format", "lm-eval", "--limit",
                   "2", "--out", tmp_path / "lm")[0] == 0
        run_stage("stage", tmp_path / "stage", lambda resume: {}, {}, log=lambda line: None)
    finally:
        os.umask(previous)
    for path in (tmp_path / "split.jsonl", tmp_path / "lm" / "_paft_synth_mc.yaml", tmp_path / "stage" / MARKER):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
