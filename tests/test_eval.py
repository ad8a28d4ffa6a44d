"""`paft-rl eval`: metrics on hand-computed cases, outputs of a real tiny-model run, resume after a crash,
and one-line errors for bad input."""

from __future__ import annotations

import json
import math

import pytest
from helpers import use_scripted_backend

from paft_rl import cli
from paft_rl.eval import EvalSettings, evaluate, prompt_sensitivity, summarize
from paft_rl.eval import backends as eval_backends
from paft_rl.eval.backends import Generation, Request, length_batches, shared_prefix_length
from paft_rl.eval.metrics import model_metrics
from paft_rl.tasks import LETTERS
from tests.tiny import make_tiny_model_dir

# Three templates for synth_mc in different shapes; each answers with an option's text or letter.
POOL = [
    {"id": "plain", "text": "{question}\n{options}\nAnswer:", "split": "heldout"},
    {"id": "letters", "text": "Q: {question} A) {A} B) {B} C) {C} D) {D}. Reply with a letter.", "split": "heldout"},
    {"id": "json", "text": '{{"question": "{question}", "options": "{options}"}}', "split": "train"},
]


def write_pool(path, templates=POOL):
    path.write_text("".join(json.dumps(t) + "\n" for t in templates), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("models"))


def settings(tmp_path, model, pool_path, **overrides) -> EvalSettings:
    values = dict(task="synth_mc", models=[str(model)], out=str(tmp_path / "out"), templates=str(pool_path),
                  limit=4, max_new_tokens=3, progress=False)
    values.update(overrides)
    return EvalSettings(**values)


# ------------------------------------------------------------------------------------------------ metrics
def test_summarize_hand_computed():
    metrics = summarize({"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.5, "e": None}, top_threshold=0.5)
    assert metrics["mean"] == pytest.approx(0.5)
    assert metrics["std"] == pytest.approx(math.sqrt(0.125))  # population std of 1, .5, 0, .5
    assert (metrics["min"], metrics["max"], metrics["spread"]) == (0.0, 1.0, 1.0)
    assert metrics["top"] == pytest.approx(0.75)  # three of four templates reach 0.5
    assert metrics["n_templates"] == 4
    assert summarize({"a": None}, 0.5)["mean"] is None


def test_prompt_sensitivity_hand_computed():
    # q1 right under 2 of 3 templates: pairs (1,1) (1,0) (1,0) -> 2/3; q2 right everywhere -> 0.
    grid = {"t1": {"q1": 1.0, "q2": 1.0}, "t2": {"q1": 1.0, "q2": 1.0}, "t3": {"q1": 0.0, "q2": 1.0}}
    assert prompt_sensitivity(grid) == pytest.approx(1 / 3)
    # Equal accuracies (0.5 each) on different questions are maximally sensitive.
    assert prompt_sensitivity({"t1": {"q1": 1.0, "q2": 0.0}, "t2": {"q1": 0.0, "q2": 1.0}}) == pytest.approx(1.0)
    # Partial credit and a question that only one template scored (left out).
    assert prompt_sensitivity({"t1": {"q1": 0.5, "q2": None}, "t2": {"q1": 1.0, "q2": 1.0}}) == pytest.approx(0.5)


def test_model_metrics_tokens_and_per_template():
    metrics = model_metrics({"t1": {"q1": 1.0, "q2": 0.0}, "t2": {"q1": 1.0, "q2": 1.0}}, 0.8, [2, 4, 6, 8], 3.0)
    assert metrics["per_template"] == {"t1": 0.5, "t2": 1.0}
    assert metrics["mean_tokens"] == 5.0 and metrics["seconds"] == 3.0
    assert metrics["top"] == 0.5 and metrics["pss"] == pytest.approx(0.5)


def test_length_batches_longest_first_within_budget():
    requests = [Request(("t", str(i)), [0] * n) for i, n in enumerate([3, 10, 5, 8, 1])]
    batches = length_batches(requests, batch_size=2, max_new_tokens=2, max_batch_tokens=20)
    lengths = [[len(r.prompt_ids) for r in batch] for batch in batches]
    assert lengths == [[10], [8, 5], [3, 1]]  # 2 x (10 + 2) > 20; 2 x (8 + 2) = 20 fits; then the batch is full
    assert sum(len(b) for b in batches) == len(requests)


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each prompt keeps one token of its own
    assert shared_prefix_length([[7], [7, 8]]) == 0


def test_prefix_sharing_gives_the_same_generations(tmp_path, tiny_model):
    from paft_rl.eval.backends import HFBackend, plan_batches
    from paft_rl.eval.models import load_tokenizer, resolve_model

    source = resolve_model(str(tiny_model))
    tokenizer = load_tokenizer(source)
    header = tokenizer("<|user|>Pick the right option. Respond with the option text only.")["input_ids"]
    questions = ["Which word is an animal? dog chair", "Which of these numbers is the largest? 12 47 3 28",
                 "Ava has 12 apples.", "red blue green"]
    requests = [Request(("t", str(i)), header + tokenizer(q)["input_ids"]) for i, q in enumerate(questions)]
    assert {p for p, _ in plan_batches(requests, 2, 6, 4096, True)} == {len(header)}
    backend = HFBackend(source, tokenizer, max_new_tokens=6, batch_size=2)
    results = {}
    for share in (True, False):
        backend.share_prefix = share
        collected = []
        backend.generate(requests, collected.extend)
        results[share] = dict(collected)
    assert results[True] == {k: Generation(g.text, g.tokens, results[True][k].seconds)
                             for k, g in results[False].items()}
    assert any(g.text for g in results[True].values())


# ------------------------------------------------------------------------ scoring through the task reward
def test_pipeline_metrics_match_hand_computed(tmp_path, tiny_model, monkeypatch):
    from paft_rl.tasks import get_task, load_rows

    task = get_task("synth_mc")
    examples = [task.example(row) for row in load_rows(task, split="test", limit=4)]
    answers = {}
    for row, example in enumerate(examples):
        gold = LETTERS.index(example.gold)
        answers[("plain", str(row))] = example.options[gold]
        answers[("letters", str(row))] = LETTERS[(gold + 1) % 4]
        answers[("json", str(row))] = example.gold if row % 2 == 0 else "no idea"
    use_scripted_backend(monkeypatch, answers)
    results, records = evaluate(settings(tmp_path, tiny_model, write_pool(tmp_path / "pool.jsonl")))
    metrics = results["models"][str(tiny_model)]
    assert metrics["per_template"] == {"plain": 1.0, "letters": 0.0, "json": 0.5}
    assert metrics["mean"] == pytest.approx(0.5) and metrics["spread"] == 1.0
    assert metrics["top"] == pytest.approx(1 / 3)  # synth_mc threshold 0.8: only "plain"
    # Each question: scores (1, 0, 1) or (1, 0, 0): both have 2 of 3 pairs disagreeing.
    assert metrics["pss"] == pytest.approx(2 / 3)
    assert metrics["mean_tokens"] == 2 and metrics["seconds"] == pytest.approx(0.5 + 12 * 0.25)
    parsed = {(r["template"], r["row_id"]): r["parsed"] for r in records}
    assert all(parsed[("plain", str(i))] == examples[i].gold for i in range(4))


# ---------------------------------------------------------------------------- a real tiny-model run
def test_eval_tiny_models_writes_every_output(tmp_path, tiny_model):
    qwen = make_tiny_model_dir(tiny_model.parent, arch="qwen2")
    pool_path = write_pool(tmp_path / "pool.jsonl")
    code = cli.main(["eval", "--models", str(tiny_model), str(qwen), "--task", "synth_mc",
                     "--templates", str(pool_path), "--limit", "3", "--max-new-tokens", "3", "--out",
                     str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["template_ids"] == ["plain", "letters", "json"]  # a FILE is evaluated whole
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 3 * 3
    for spec in (str(tiny_model), str(qwen)):
        metrics = results["models"][spec]
        assert {"mean", "std", "min", "max", "spread", "top", "pss", "mean_tokens", "seconds"} <= metrics.keys()
        for template, accuracy in metrics["per_template"].items():
            scores = [r["score"] for r in records if r["model"] == spec and r["template"] == template]
            assert accuracy == pytest.approx(sum(scores) / len(scores))
        assert 1 <= metrics["mean_tokens"] <= 3
    csv_lines = (out / "per_template.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,template,accuracy,estimated,") and len(csv_lines) == 1 + 2 * 3
    assert all(line.split(",")[3] == "False" for line in csv_lines[1:])  # a full run measures, not estimates
    for name in ("accuracy_distribution.png", "template_heatmap.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 2000


def test_eval_lora_adapter_over_its_base(tmp_path, tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    results, records = evaluate(settings(tmp_path, adapter, write_pool(tmp_path / "pool.jsonl"), limit=2))
    assert len(records) == 6 and str(adapter) in results["models"]


# ----------------------------------------------------------------------------------------------- resume
def test_resume_after_crash_generates_only_missing_cells(tmp_path, tiny_model, monkeypatch):
    pool_path = write_pool(tmp_path / "pool.jsonl")
    run = settings(tmp_path, tiny_model, pool_path, limit=5, batch_size=2)  # 15 cells, 8 batches
    calls = {"batches": 0}
    original = eval_backends.HFBackend._generate_batch

    def crash_after_three_batches(self, *args):
        calls["batches"] += 1
        if calls["batches"] > 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args)

    monkeypatch.setattr(eval_backends.HFBackend, "_generate_batch", crash_after_three_batches)
    with pytest.raises(KeyboardInterrupt):
        evaluate(run)
    log_file = next((tmp_path / "out" / ".resume").glob("*.jsonl"))
    logged = sum('"prompt_hash"' in line for line in log_file.read_text().splitlines())
    assert 0 < logged < 15  # three batches of at most two made it to disk before the crash
    with log_file.open("a") as handle:
        handle.write('{"template": "plain", "row": "4", "prompt_ha')  # a line torn by kill -9
    monkeypatch.setattr(eval_backends.HFBackend, "_generate_batch", original)
    resumed, _ = evaluate(run)
    assert resumed["models"][str(tiny_model)]["generated_this_run"] == 15 - logged
    # A fresh run gives the same numbers: nothing was lost or mixed up in the resume.
    fresh, _ = evaluate(settings(tmp_path, tiny_model, pool_path, limit=5, out=str(tmp_path / "fresh")))
    assert resumed["models"][str(tiny_model)]["per_template"] == fresh["models"][str(tiny_model)]["per_template"]
    again, _ = evaluate(run)
    assert again["models"][str(tiny_model)]["generated_this_run"] == 0


def test_changed_template_is_regenerated(tmp_path, tiny_model):
    pool_path = write_pool(tmp_path / "pool.jsonl")
    evaluate(settings(tmp_path, tiny_model, pool_path, limit=2))
    changed = [dict(POOL[0], text="Question: {question}\n{options}\nAnswer:"), *POOL[1:]]
    results, _ = evaluate(settings(tmp_path, tiny_model, write_pool(pool_path, changed), limit=2))
    assert results["models"][str(tiny_model)]["generated_this_run"] == 2


# ------------------------------------------------------------------------------------------- bad input
def run_cli(capsys, *argv):
    code = cli.main(["eval", *argv, "--no-progress"])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("case", ["task", "model", "pool", "limit", "context", "threads"])
def test_bad_input_is_one_line(tmp_path, tiny_model, capsys, case):
    pool_path = write_pool(tmp_path / "pool.jsonl")
    argv = {"task": "no_such_task", "model": str(tiny_model), "templates": str(pool_path), "limit": "2"}
    expected = {"task": "unknown task", "model": "does not exist", "pool": "problem",
                "limit": "limit must be a positive number", "context": "holds 512 tokens",
                "threads": "threads must be a positive number"}[case]
    if case == "model":
        argv.update(task="synth_mc", model=str(tmp_path / "missing-model"))
    elif case == "pool":
        argv.update(task="synth_mc", templates=str(write_pool(tmp_path / "bad.jsonl", [
            {"id": "x", "text": "{question} {nonsense}", "split": "heldout"}])))
    elif case == "limit":
        argv.update(task="synth_mc", limit="0")
    elif case in ("context", "threads"):
        argv.update(task="synth_mc")
    extra = {"context": ["--max-new-tokens", "600"], "threads": ["--threads", "0"]}.get(case, [])
    code, err = run_cli(capsys, *[x for k, v in argv.items() for x in (f"--{k}", v)], "--out",
                        str(tmp_path / "out"), *extra)
    assert code == 2
    assert len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "out" / "results.json").exists()
