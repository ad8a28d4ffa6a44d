"""A result reflects the model as it is now: evaluations and workflow stages are keyed by what a model folder holds
(`paft_rl.eval.fingerprint`), so a model retrained or edited in place is evaluated afresh, and says so."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
import yaml

from paft_rl.cli import main as cli
from paft_rl.eval.fingerprint import folder_fingerprint, hub_fingerprint, model_fingerprint
from tests.tiny import make_tiny_model_dir


@pytest.fixture
def model(tmp_path):
    return make_tiny_model_dir(tmp_path / "m")


def retrain_in_place(folder, seed: int = 1) -> None:
    """What ``--overwrite true`` into the model's own folder does: other weights saved over the old files."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder))
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    model.save_pretrained(str(folder))


# ---------------------------------------------------------------------------- what the fingerprint reads
def test_weights_are_read_by_size_mtime_and_edges(model):
    weights = model / "model.safetensors"
    before = folder_fingerprint(model)
    assert folder_fingerprint(model) == before  # stable
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the last tensor changed, size and modification time kept
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    edited = folder_fingerprint(model)
    assert edited != before
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # only rewritten
    assert folder_fingerprint(model) != edited


def test_config_and_tokenizer_files_count_records_of_training_do_not(model):
    before = folder_fingerprint(model)
    for name in ("trainer_state.json", "stage.json", "training_args.bin", "README.md"):
        (model / name).write_text("how it was made")
    (model / "checkpoint-3").mkdir()
    (model / "checkpoint-3" / "model.safetensors").write_text("a checkpoint")
    assert folder_fingerprint(model) == before
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 64}))
    assert folder_fingerprint(model) != before


def test_an_adapter_is_read_with_its_base(model, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(model)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    before = model_fingerprint(str(adapter))
    retrain_in_place(model)
    assert model_fingerprint(str(adapter)) != before


def test_a_hub_id_is_its_cached_snapshot(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert hub_fingerprint("org/name") == "hub:org/name@main"  # nothing cached, and offline
    repo = tmp_path / "models--org--name"
    (repo / "snapshots" / "0123abc").mkdir(parents=True)
    (repo / "snapshots" / "0123abc" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    assert model_fingerprint("org/name") == "hub:org/name@0123abc"


# ---------------------------------------------------------------------------- eval: answers of the model as it is
def run_eval(model, out, capsys):
    assert cli(["eval", "--models", str(model), "--task", "synth_mc", "--limit", "2", "--max_new_tokens", "4",
                "--out", str(out), "--no_progress"]) == 0
    printed = capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    texts = {(g["template"], g["row_id"]): g["output"]
             for g in map(json.loads, (out / "generations.jsonl").read_text().splitlines())}
    return results["models"][str(model)], texts, printed


def test_a_model_retrained_in_place_is_evaluated_again(model, tmp_path, capsys):
    """Before, the resume log was keyed by the model's path: the old model's answers and numbers came back."""
    old_metrics, old_texts, _ = run_eval(model, tmp_path / "F", capsys)
    retrain_in_place(model)
    metrics, texts, printed = run_eval(model, tmp_path / "F", capsys)
    assert f"model {model} changed since its answers in {tmp_path / 'F'} were written" in printed.err
    assert "evaluating it again" in printed.err
    assert metrics["generated_this_run"] == len(texts) == 20
    # The folder now holds exactly what a fresh evaluation of the retrained model gives.
    fresh_metrics, fresh_texts, _ = run_eval(model, tmp_path / "G", capsys)
    assert texts == fresh_texts != old_texts
    for key in ("per_template", "mean", "mean_tokens", "model_fingerprint"):
        assert metrics[key] == fresh_metrics[key]
    assert metrics["model_fingerprint"] == model_fingerprint(str(model)) != old_metrics["model_fingerprint"]
    # Unchanged since: reused, not generated again.
    again, _, printed = run_eval(model, tmp_path / "F", capsys)
    assert again["generated_this_run"] == 0 and "changed since" not in printed.err


def test_answers_that_do_not_say_which_model_made_them_are_not_reused(model, tmp_path, capsys):
    """A resume log of an older paft-rl records no fingerprint: its answers may be of another model."""
    run_eval(model, tmp_path / "F", capsys)
    (log,) = (tmp_path / "F" / ".resume").iterdir()
    lines = log.read_text().splitlines()
    assert "model_fingerprint" in json.loads(lines[0])
    log.write_text("".join(line + "\n" for line in lines[1:]))
    metrics, _, printed = run_eval(model, tmp_path / "F", capsys)
    assert "do not record which model files made them" in printed.err and metrics["generated_this_run"] == 20


def test_kept_results_of_a_model_changed_since_are_named(model, tmp_path, capsys):
    other = shutil.copytree(model, tmp_path / "other" / "second")
    run_eval(other, tmp_path / "F", capsys)
    retrain_in_place(other)
    _, _, printed = run_eval(model, tmp_path / "F", capsys)
    assert f"the results of model {other} kept in this folder are of an earlier version of it" in printed.err


# ---------------------------------------------------------------------------- workflow stages read models by content
def test_pipeline_stages_rerun_when_a_model_they_read_was_changed_by_hand(model, tmp_path, capsys):
    """Before, a stage marker was keyed by settings and paths only: the evaluation of a hand-changed SFT model
    (and the SFT of a hand-changed base) were 'already done' and the old numbers stood."""
    recipe = {"model_name_or_path": str(model), "task": "synth_mc", "output_dir": str(tmp_path / "sft"), "max_steps": 1,
              "per_device_train_batch_size": 2, "data_limit": 4, "report_to": "none", "bf16": False,
              "save_strategy": "no", "max_length": 512}
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(recipe))
    config = {"sft": str(tmp_path / "sft.yaml"), "output_dir": str(tmp_path / "run"),
              "eval": {"limit": 1, "max_new_tokens": 3, "models": ["sft"], "progress": False}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))

    def pipeline():
        assert cli(["pipeline", "--config", str(tmp_path / "p.yaml")]) == 0
        results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
        return capsys.readouterr().out, results["models"][str(tmp_path / "sft")]

    pipeline()
    retrain_in_place(tmp_path / "sft")  # the SFT model changed by hand
    out, judged = pipeline()
    assert "== sft (sft): already done" in out
    assert f"== eval (evaluate sft): settings changed (model {tmp_path / 'sft'}: files changed (fingerprint" in out
    assert judged["model_fingerprint"] == model_fingerprint(str(tmp_path / "sft"))
    retrain_in_place(model, seed=2)  # the base model changed by hand: SFT trains again, from it
    out, _ = pipeline()
    assert f"== sft (sft): settings changed (model {model}: files changed (fingerprint" in out
    out, _ = pipeline()
    assert "== sft (sft): already done" in out and "== eval (evaluate sft): already done" in out
