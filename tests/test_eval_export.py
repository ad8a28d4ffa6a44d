"""`paft-rl pool export --format lm-eval`: the task files, and a real `lm_eval` run on them with a tiny model
whose per-template accuracies, prompts and outputs agree with `paft-rl eval` on the same questions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from paft_rl import cli
from paft_rl.eval import EvalSettings, evaluate
from paft_rl.eval.export import answer_filter, jinja_template
from paft_rl.tasks import get_task
from prompt_pool import PromptPool, Template

POOL = [
    {"id": "plain", "text": "{question}\n{options}\nAnswer:", "split": "heldout"},
    {"id": "Letters 2", "text": "Q: {question} A) {A} B) {B} C) {C} D) {D}. The answer is", "split": "heldout"},
    {"id": "json", "text": '{{"question": "{question}", "options": "{options}"}} {{% raw %}} 100%', "split": "train"},
]
ROWS = 6


def write_pool(path: Path) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in POOL), encoding="utf-8")
    return path


def test_jinja_template_renders_like_the_pool():
    from jinja2 import Environment, StrictUndefined

    task = get_task("synth_mc")
    pool = PromptPool([Template(t["id"], t["text"], t["split"]) for t in POOL])
    fields = {"question": "Q?", "A": "a", "B": "b", "C": "c", "D": "d", "options": "A. a\nB. b"}
    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True)  # the harness's settings
    for template in pool.templates:
        assert env.from_string(jinja_template(pool, template, list(task.fields))).render(**fields) == \
            pool.render(template, fields)
    tricky = PromptPool([Template("t", "{question} {{% endraw %}} #")])
    assert env.from_string(jinja_template(tricky, tricky.templates[0], ["question"])).render(question="x") == \
        "x {% endraw %} #"


def test_answer_filters_read_the_task_format():
    letter, _ = answer_filter(get_task("piqa"), 2)
    assert re.findall(letter, "The answer is B.") == ["B"] and re.findall(letter, "Both are fine") == []
    number, select = answer_filter(get_task("gsm8k"), 0)
    assert re.findall(number, "3 apples and 5 more: 1,008")[select] == "1,008"
    boxed, select = answer_filter(get_task("math"), 0)
    assert re.findall(boxed, r"so \boxed{1} no, \boxed{\frac{1}{2}}")[select] == r"\frac{1}{2}"


def test_export_files_and_bad_input(tmp_path, capsys):
    pool = write_pool(tmp_path / "pool.jsonl")
    out = tmp_path / "lm"
    assert cli.main(["pool", "export", str(pool), "--task", "synth_mc", "--format", "lm-eval", "--out", str(out),
                     "--limit", "3", "--templates", "heldout"]) == 0
    group = yaml.safe_load((out / "_paft_synth_mc_pool.yaml").read_text())
    assert group["task"] == ["paft_synth_mc_pool_plain", "paft_synth_mc_pool_letters_2"]  # held-out only
    task = yaml.safe_load((out / "paft_synth_mc_pool_plain.yaml").read_text())
    assert task["doc_to_text"] == "{{ question }}\n{{ options }}\nAnswer:"
    assert task["filter_list"][0]["filter"][0]["regex_pattern"] == "(?<![A-Za-z0-9])([A-D])(?![A-Za-z0-9])"
    docs = [json.loads(line) for line in (out / "docs.jsonl").read_text().splitlines()]
    assert len(docs) == 3
    assert {"question", "A", "options", "paft_gold", "paft_choices", "paft_gold_index"} <= docs[0].keys()
    assert docs[0]["paft_choices"][docs[0]["paft_gold_index"]] == docs[0][docs[0]["paft_gold"]]
    capsys.readouterr()
    for argv, expected in [(["--task", "synth_tool"], "no answer format"),
                           (["--task", "synth_arith", "--scoring", "loglik"], "multiple-choice"),
                           (["--task", "synth_mc", "--max-new-tokens", "0"], "--max-new-tokens")]:
        assert cli.main(["pool", "export", str(pool), "--format", "lm-eval", "--out", str(tmp_path / "bad"),
                         *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "bad").exists()


def _samples(output: Path, task_name: str) -> list[dict]:
    path = next(output.rglob(f"samples_{task_name}_*.jsonl"))
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])


@pytest.mark.slow
def test_lm_eval_runs_the_export_and_agrees_with_paft_rl_eval(tmp_path, tiny_model):
    pytest.importorskip("lm_eval")
    pool = write_pool(tmp_path / "pool.jsonl")
    out = tmp_path / "lm"
    for scoring in ("loglik", "generate"):
        assert cli.main(["pool", "export", str(pool), "--task", "synth_mc", "--format", "lm-eval", "--out", str(out),
                         "--limit", str(ROWS), "--max-new-tokens", "4", "--scoring", scoring,
                         "--group", f"tiny_{scoring}"]) == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={tiny_model},dtype=float32",
         "--include_path", str(out), "--tasks", "tiny_loglik,tiny_generate", "--apply_chat_template", "--device",
         "cpu", "--batch_size", "4", "--log_samples", "--output_path", str(tmp_path / "results")],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    ids = {t["id"]: re.sub(r"[^a-z0-9_]+", "_", t["id"].lower()) for t in POOL}
    for scoring in ("loglik", "generate"):
        ours, records = evaluate(EvalSettings(task="synth_mc", models=[str(tiny_model)], out=str(tmp_path / scoring),
                                              templates=str(pool), limit=ROWS, max_new_tokens=4, scoring=scoring,
                                              progress=False))
        per_template = ours["models"][str(tiny_model)]["per_template"]
        for template, name in ids.items():
            samples = _samples(tmp_path / "results", f"tiny_{scoring}_{name}")
            mine = sorted((r for r in records if r["template"] == template), key=lambda r: int(r["row_id"]))
            assert len(samples) == len(mine) == ROWS
            if scoring == "loglik":
                theirs = [s["acc"] for s in samples]
                for sample, record in zip(samples, mine):
                    assert sample["arguments"]["gen_args_0"]["arg_0"] == record["prompt"]
                    harness = [float(r[0]) for r in sample["filtered_resps"]]
                    assert harness == pytest.approx(record["option_logliks"], abs=1e-3)
            else:
                theirs = [s["exact_match"] for s in samples]
                for sample, record in zip(samples, mine):
                    assert sample["arguments"]["gen_args_0"]["arg_0"] == record["prompt"]
                    assert sample["resps"][0][0] == record["output"]
            assert sum(theirs) / ROWS == pytest.approx(per_template[template]), (scoring, template)
    summary = json.loads(next((tmp_path / "results").rglob("results_*.json")).read_text())
    loglik_mean = summary["groups"]["tiny_loglik"]["acc,none"]
    assert loglik_mean == pytest.approx(sum(evaluate(EvalSettings(
        task="synth_mc", models=[str(tiny_model)], out=str(tmp_path / "loglik"), templates=str(pool), limit=ROWS,
        scoring="loglik", progress=False))[0]["models"][str(tiny_model)]["per_template"].values()) / len(POOL))
