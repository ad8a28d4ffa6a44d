"""A three-task sequence on a tiny model: stages run, the report's metrics match its own matrix."""

import json

import pytest
import yaml

from helpers import assert_adapter_trained
from paft_rl.cli import main
from paft_rl.selection.continual import sequence_metrics
from tests.tiny import make_tiny_model_dir


def write_config(tmp_path, mode="merge", **overrides):
    model = make_tiny_model_dir(tmp_path / "model")
    piqa = tmp_path / "piqa.jsonl"
    piqa.write_text("".join(json.dumps({"goal": f"Open jar {i}", "sol1": "twist the lid", "sol2": "eat the lid",
                                        "label": i % 2}) + "\n" for i in range(8)))
    config = {
        "model_name_or_path": str(model), "output_dir": str(tmp_path / "seq"), "adapter_mode": mode,
        "sft": {"max_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "max_length": 512,
                "lora_r": 4, "lora_alpha": 8, "bf16": False, "logging_steps": 1, "data_limit": 8},
        "select": {"rows": 2, "batch_size": 8},
        "eval": {"limit": 1, "max_new_tokens": 4, "batch_size": 32},
        "tasks": [{"task": "synth_mc"}, {"task": "synth_arith"}, {"task": "piqa", "data": str(piqa)}],
        **overrides,
    }
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_three_task_sequence(tmp_path, capsys):
    # Stack mode exercises everything merge mode does (merging each adapter) plus rebuilding from adapters.
    mode = "stack"
    path = write_config(tmp_path, mode)
    assert main(["sequence", "--config", str(path)]) == 0
    report = json.loads((tmp_path / "seq" / "sequence.json").read_text())
    assert report["tasks"] == ["synth_mc", "synth_arith", "piqa"]
    assert len(report["matrix"]) == 3 and all(len(row) == 3 for row in report["matrix"])
    assert report["metrics"] == pytest.approx(sequence_metrics(report["matrix"], report["baseline"]))
    for stage in (1, 2, 3):
        chosen = json.loads((tmp_path / "seq" / f"stage_{stage}" / "selection" / "scores.json").read_text())
        assert chosen["chosen"] == report["templates"][stage - 1]
    assert "AP" in capsys.readouterr().out
    if mode == "stack":
        assert not (tmp_path / "seq" / "stage_1" / "model").exists()
        assert_adapter_trained(make_tiny_model_dir(tmp_path / "model"), tmp_path / "seq" / "stage_1" / "adapter")
    # A rerun finds every stage finished and only rebuilds the report.
    assert main(["sequence", "--config", str(path)]) == 0
    assert "already done" in capsys.readouterr().out


@pytest.mark.slow
def test_reordered_tasks_rerun_every_stage(tmp_path, capsys):
    """Swapping the task order must not reuse stage 1 (it trained the other task) nor mislabel the matrix."""
    config = yaml.safe_load(write_config(tmp_path).read_text())
    config["tasks"] = [{"task": "synth_mc"}, {"task": "synth_arith"}]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["sequence", "--config", str(path)]) == 0
    capsys.readouterr()
    config["tasks"] = config["tasks"][::-1]
    path.write_text(yaml.safe_dump(config))
    assert main(["sequence", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "already done" not in out and "settings changed" in out
    report = json.loads((tmp_path / "seq" / "sequence.json").read_text())
    assert report["tasks"] == ["synth_arith", "synth_mc"]
    trained = yaml.safe_load((tmp_path / "seq" / "stage_1" / "recipe.yaml").read_text())
    assert trained["task"] == "synth_arith"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tasks": [{"task": "nope"}]}, "unknown task 'nope'"),
        ({"adapter_mode": "glue"}, "adapter_mode must be merge or stack"),
        ({"colour": "red"}, "unknown key(s) colour"),
        ({"tasks": ["synth_mc"]}, "each with a `task:` name"),
    ],
)
def test_bad_config(tmp_path, overrides, message, capsys):
    path = write_config(tmp_path, **overrides)
    assert main(["sequence", "--config", str(path)]) == 2
    assert message in capsys.readouterr().err
