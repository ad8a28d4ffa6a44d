"""The evaluation report a person reads: parse failures per template and model, the exact prompt text in
generations.jsonl, short model labels, option distributions and balanced accuracy with a lean warning, and
the distribution plot (legend, counts in the title, chance line, dots instead of a violin for few values)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from helpers import use_scripted_backend

from paft_rl import cli
from paft_rl.eval import EvalSettings, evaluate, format_table, write_outputs
from paft_rl.eval.answers import balanced_accuracy, option_bias
from paft_rl.eval.models import derive_label, model_labels
from paft_rl.eval.plots import distribution_figure
from paft_rl.tasks import get_task, load_rows
from prompt_pool import UserError
from tests.tiny import make_tiny_model_dir

POOL = [
    {"id": "plain", "text": "{question}\n{options}\nAnswer:", "split": "heldout"},
    {"id": "letters", "text": "Q: {question} A) {A} B) {B} C) {C} D) {D}. Reply with a letter.", "split": "heldout"},
]
ROWS = 8


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny model saved as a training run's checkpoint folder (``.../run-7/checkpoint-60``)."""
    root = tmp_path_factory.mktemp("models")
    return Path(shutil.copytree(make_tiny_model_dir(root), root / "run-7" / "checkpoint-60"))


@pytest.fixture(scope="module")
def examples():
    task = get_task("synth_mc")
    return [task.example(row) for row in load_rows(task, split="test", limit=ROWS)]


@pytest.fixture
def scripted_run(tmp_path, tiny_model, examples, monkeypatch):
    answers = {}
    for row, example in enumerate(examples):
        answers[("plain", str(row))] = "hmm, hard to say" if row < 2 else "A"
        answers[("letters", str(row))] = example.gold
    use_scripted_backend(monkeypatch, answers)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(t) + "\n" for t in POOL))
    settings = EvalSettings(task="synth_mc", models=[str(tiny_model)], out=str(tmp_path / "out"), templates=str(pool),
                            limit=ROWS, progress=False)
    results, records = evaluate(settings)
    write_outputs(results, records, settings.out)
    return results, records, tmp_path / "out"


def test_parse_failures_per_template_and_model(scripted_run, tiny_model):
    results, records, out = scripted_run
    metrics = results["models"][str(tiny_model)]
    assert metrics["parse_failures_per_template"] == {"plain": 2 / ROWS, "letters": 0.0}
    assert metrics["parse_failure_rate"] == pytest.approx(2 / (2 * ROWS))
    assert [r["parse_failed"] for r in records if r["template"] == "plain"] == [True, True] + [False] * (ROWS - 2)
    rows = list(csv.DictReader(io.StringIO((out / "per_template.csv").read_text())))
    assert {r["template"]: float(r["parse_failure_rate"]) for r in rows} == {"plain": 0.25, "letters": 0.0}
    table = format_table(results)
    assert "unparsed" in table.splitlines()[1]
    assert "12% of answers could not be read (worst: plain 25%)" in table  # 2 of 16 cells


def test_generations_hold_the_text_the_model_saw(scripted_run):
    _, records, out = scripted_run
    saved = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    first = next(r for r in saved if r["template"] == "letters")
    # The tiny tokenizer's chat template: the user turn, its end token, then the opened assistant turn.
    assert first["prompt"].startswith("<|user|>Q: ")
    assert first["prompt"].endswith("Reply with a letter.</s><|assistant|>")


def test_plain_prompt_record_shows_the_bos_the_tokenizer_added(tmp_path, tiny_model, monkeypatch, examples):
    from tokenizers import processors
    from transformers import AutoTokenizer

    bos_model = Path(shutil.copytree(tiny_model, tmp_path / "bos-model"))
    tokenizer = AutoTokenizer.from_pretrained(bos_model)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)])
    tokenizer.save_pretrained(bos_model)
    use_scripted_backend(monkeypatch, {("plain", str(i)): "A" for i in range(2)})
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps(POOL[0]) + "\n")
    _, records = evaluate(EvalSettings(task="synth_mc", models=[str(bos_model)], out=str(tmp_path / "o"),
                                       templates=str(pool), limit=2, progress=False, prompt_format="plain"))
    rendered = f"{examples[0].fields['question']}\n{examples[0].fields['options']}\nAnswer:"
    assert records[0]["prompt"] == "<s>" + rendered


def test_option_distribution_balanced_accuracy_and_lean_warning(scripted_run, tiny_model, examples):
    results, _, _ = scripted_run
    metrics = results["models"][str(tiny_model)]
    golds = [e.gold for e in examples]
    plain = metrics["choices_per_template"]["plain"]
    assert plain["chosen"] == {"A": 6 / ROWS, "none": 2 / ROWS}
    assert plain["gold"] == {letter: golds.count(letter) / ROWS for letter in sorted(set(golds))}
    # Balanced accuracy by hand: per gold letter, the share of its questions answered right (rows >= 2 say "A").
    by_gold = {g: [float(i >= 2 and g == "A") for i, x in enumerate(golds) if x == g] for g in set(golds)}
    assert plain["balanced_accuracy"] == pytest.approx(sum(sum(v) / len(v) for v in by_gold.values()) / len(by_gold))
    assert metrics["choices_per_template"]["letters"]["balanced_accuracy"] == 1.0
    assert metrics["biased_templates"] == ["plain"]
    assert plain["bias"]["option"] == "A" and plain["bias"]["chosen"] == 0.75
    assert results["settings"]["chance_accuracy"] == 0.25
    table = format_table(results)
    assert "bal_acc" in table.splitlines()[1] and "chance 0.25" in table.splitlines()[0]
    # Over both templates "A" is chosen (6 + n_A) / 16 times and is the gold n_A / 8 of the time.
    n_a = golds.count("A")
    assert (metrics["choices"]["bias"] is not None) == ((6 - n_a) / 16 >= 0.25)
    warning = next(line for line in table.splitlines() if line.startswith("warning:"))
    assert warning.startswith("warning: run-7/checkpoint-60 answers one option far more often than the golds "
                              f"under 1 of 2 templates (plain: A 75% vs {n_a / ROWS:.0%} of golds")


def test_balanced_accuracy_and_bias_by_hand():
    always_a = [{"gold": g, "score": float(g == "A")} for g in "AABBBBBBBB"]
    assert balanced_accuracy(always_a) == pytest.approx(0.5)  # 1.0 on A, 0.0 on B; plain accuracy 0.2
    assert option_bias({"A": 0.95, "B": 0.05}, {"A": 0.35, "B": 0.65}) == {"option": "A", "chosen": 0.95, "gold": 0.35}
    assert option_bias({"A": 0.6, "B": 0.4}, {"A": 0.5, "B": 0.5}) is None  # within the margin
    assert option_bias({"none": 1.0}, {"A": 1.0}) is None


def test_short_labels():
    cache = "/home/u/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/0a1b2c3d/"
    assert derive_label(cache) == "SmolLM2-135M-Instruct"
    assert derive_label("HuggingFaceTB/SmolLM2-135M") == "SmolLM2-135M"
    assert derive_label("runs/paft/checkpoint-60") == "paft/checkpoint-60"
    assert model_labels(["a/seed1/final", "b/seed1/final"]) == ["a/seed1/final", "b/seed1/final"]
    assert model_labels(["x", "y"], ["base", "tuned"]) == ["base", "tuned"]
    with pytest.raises(UserError, match="one label per model in --labels"):
        model_labels(["x", "y"], ["base"])


def test_labels_in_results_table_and_csv(scripted_run, tiny_model):
    results, records, out = scripted_run
    assert results["models"][str(tiny_model)]["label"] == "run-7/checkpoint-60"
    assert results["settings"]["labels"] == ["run-7/checkpoint-60"]
    assert format_table(results).splitlines()[2].startswith("run-7/checkpoint-60 ")
    assert str(tiny_model) not in format_table(results)
    rows = list(csv.DictReader(io.StringIO((out / "per_template.csv").read_text())))
    assert {r["model"] for r in rows} == {"run-7/checkpoint-60"} and rows[0]["model_path"] == str(tiny_model)
    assert {r["label"] for r in records} == {"run-7/checkpoint-60"}


def test_label_option_and_its_errors(tmp_path, tiny_model, capsys, monkeypatch, examples):
    use_scripted_backend(monkeypatch, {("plain", str(i)): "A" for i in range(2)})
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps(POOL[0]) + "\n")
    argv = ["eval", "--model", str(tiny_model), "--task", "synth_mc", "--templates", str(pool), "--limit", "2",
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert cli.main([*argv, "--labels", "base"]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("base ")
    assert cli.main([*argv, "--labels", "a", "b"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "one label per model in --labels (1 models, 2 labels)" in err
    assert cli.main([*argv, "--label", "a"]) == 2  # one spelling: a near miss is named, not ignored
    assert capsys.readouterr().err.strip() == ("paft-rl eval: error: command line: unknown option '--label'; did you "
                                               "mean '--labels'?")


def _results(per_template_by_model: dict[str, list[float]], chance=0.25) -> dict:
    templates = [f"t{i}" for i in range(max(len(v) for v in per_template_by_model.values()))]
    return {
        "settings": {"task": "synth_mc", "template_ids": templates, "n_questions": 20, "top_threshold": 0.8,
                     "chance_accuracy": chance},
        "models": {m: {"label": m, "per_template": dict(zip(templates, v))} for m, v in per_template_by_model.items()},
    }


def test_distribution_plot_legend_title_chance_and_dots():
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    few = [0.0, 0.25, 0.25, 1.0, 0.5]  # four distinct values: dots only
    many = [i / 10 for i in range(10)]  # ten distinct values: a violin behind the dots
    figure = distribution_figure(_results({"few": few, "many": many + [1.0]}))
    axis = figure.axes[0]
    legend = [t.get_text() for t in axis.get_legend().get_texts()]
    assert "mean over templates" in legend and "chance 0.25" in legend and "Top threshold 0.8" in legend
    assert "11 templates x 20 questions" in axis.get_title()
    violins = [c for c in axis.collections if isinstance(c, PolyCollection)]
    assert len(violins) == 1  # only "many" has a shape worth smoothing
    dots = [c for c in axis.collections if c.get_offsets().shape[0] in (len(few), len(many) + 1)
            and not isinstance(c, PolyCollection)]
    assert dots and all(not d.get_clip_on() for d in dots)  # dots at 0 and 1 are drawn whole
    low, high = axis.get_ylim()
    assert low < 0 and high > 1
    few_x = dots[0].get_offsets()[:, 0]
    assert len(set(few_x.round(6))) == len(few)  # jittered: the two 0.25s do not sit on one spot
    plt.close(figure)
    no_chance = distribution_figure(_results({"m": few}, chance=None))
    assert not any(t.get_text().startswith("chance") for t in no_chance.axes[0].get_legend().get_texts())
    plt.close(no_chance)


def test_the_table_of_a_budgeted_run_shows_the_intervals_of_mean_and_worst():
    from paft_rl.eval.report import format_table

    metrics = {"label": "paft", "mean": 0.61, "min": 0.4, "per_template": {"t1": 0.4, "t2": 0.82},
               "estimated": {"interval": 0.9, "intervals": {"mean": [0.55, 0.67], "min": [0.31, 0.48]}}}
    results = {"models": {"runs/paft": metrics, "runs/base": {"label": "base", "mean": 0.3, "min": 0.2}},
               "settings": {"task": "piqa", "template_ids": ["t1", "t2"], "n_questions": 10, "top_threshold": 0.8}}
    lines = format_table(results).splitlines()
    assert "paft: 90% intervals mean [0.550, 0.670], min [0.310, 0.480]" in lines
    assert not any(line.startswith("base:") for line in lines)  # a full-grid run has no interval to show
