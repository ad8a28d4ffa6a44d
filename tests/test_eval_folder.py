"""`paft-rl eval --out DIR` never silently replaces what DIR holds: the same evaluation adds models to it,
another evaluation is refused before any model loads, naming what differs."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from paft_rl.cli import main as cli
from tests.tiny import make_tiny_model_dir


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    first = make_tiny_model_dir(root / "a")
    second = shutil.copytree(first, root / "b" / "other-model")
    return str(first), str(second)


def run_eval(out, model, limit=2, templates="heldout"):
    return cli(["eval", "--model", model, "--task", "synth_mc", "--limit", str(limit), "--templates", templates,
                "--max-new-tokens", "3", "--out", str(out), "--no-progress"])


def test_same_evaluation_adds_models_and_keeps_the_earlier_ones(two_models, tmp_path, capsys):
    first, second = two_models
    assert run_eval(tmp_path / "ev", first) == 0
    before = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert run_eval(tmp_path / "ev", second) == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert set(results["models"]) == {first, second}
    assert results["models"][first]["per_template"] == before["models"][first]["per_template"]
    assert results["settings"]["models"] == [first, second]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "ev" / "per_template.csv").read_text())))
    assert {row["model_path"] for row in rows} == {first, second}
    generations = [json.loads(line) for line in (tmp_path / "ev" / "generations.jsonl").read_text().splitlines()]
    per_model = {spec: sum(1 for g in generations if g["model"] == spec) for spec in (first, second)}
    assert per_model[first] == per_model[second] == len(results["settings"]["template_ids"]) * 2
    capsys.readouterr()


@pytest.mark.parametrize(("change", "named"), [({"limit": 3}, "limit: 2 -> 3"), ({"templates": "all"}, "templates")])
def test_other_evaluation_is_refused_and_nothing_is_lost(two_models, tmp_path, capsys, change, named):
    first, second = two_models
    assert run_eval(tmp_path / "ev", first) == 0
    kept = (tmp_path / "ev" / "results.json").read_text()
    capsys.readouterr()
    assert run_eval(tmp_path / "ev", second, **change) == 2
    err = capsys.readouterr().err
    assert "holds results of another evaluation" in err and named in err
    assert (tmp_path / "ev" / "results.json").read_text() == kept


def test_interrupted_run_keeps_every_finished_wave(two_models, tmp_path, capsys, monkeypatch):
    """Ctrl-C during generation: exit 130, the waves already done are in the resume log, a rerun does the rest."""
    from paft_rl.eval import backends

    first, _ = two_models
    real = backends.HFBackend.generate
    calls = []

    def interrupt_after_one_wave(self, requests, on_batch, progress=None):
        def once(results):
            on_batch(results)
            calls.append(len(results))
            raise KeyboardInterrupt

        real(self, requests, once, progress)

    monkeypatch.setattr(backends.HFBackend, "batch_size", 4, raising=False)
    monkeypatch.setattr(backends.HFBackend, "generate", interrupt_after_one_wave)
    argv = ["eval", "--model", first, "--task", "synth_mc", "--limit", "4", "--max-new-tokens", "3",
            "--out", str(tmp_path / "ev"), "--no-progress", "--batch-size", "4"]
    assert cli(argv) == 130
    assert "interrupted: 4 of 40 prompts" in capsys.readouterr().err
    monkeypatch.setattr(backends.HFBackend, "generate", real)
    assert cli(argv) == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["models"][first]["generated_this_run"] == 36
