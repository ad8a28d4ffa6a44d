"""`paft-rl eval --scoring loglik`: option log-likelihoods checked against a direct, unbatched computation
with the tiny model, the chosen option scored by the task reward, resume, and one-line errors."""

from __future__ import annotations

import json

import pytest

from paft_rl import cli
from paft_rl.eval import EvalSettings, evaluate, format_table, write_outputs
from paft_rl.eval.loglik import ChoiceRequest, choice_batches
from paft_rl.tasks import LETTERS, get_task, load_rows

POOL = [
    {"id": "plain", "text": "{question}\n{options}\nAnswer:", "split": "heldout"},
    {"id": "letters", "text": "Q: {question} A) {A} B) {B} C) {C} D) {D}. The answer is", "split": "heldout"},
]
ROWS = 4


def write_pool(path):
    path.write_text("".join(json.dumps(t) + "\n" for t in POOL), encoding="utf-8")
    return path


def direct_logliks(model, tokenizer, prompt: str, options: list[str], chat: bool) -> list[float]:
    """Each option's summed log-probability after ``prompt``, one sequence at a time, no padding."""
    import torch

    context = tokenizer(prompt, add_special_tokens=not chat)["input_ids"]
    scores = []
    for option in options:
        text = option if chat else " " + option
        whole = tokenizer(prompt + text, add_special_tokens=not chat)["input_ids"]
        assert whole[:len(context)] == context
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
        scores.append(sum(float(logprobs[i - 1, whole[i]]) for i in range(len(context), len(whole))))
    return scores


@pytest.mark.parametrize("chat, batch_size", [(True, 5), (False, 5), (True, 64), (False, 64)])
def test_loglik_matches_direct_per_option_computation(tmp_path, tiny_model, chat, batch_size):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = EvalSettings(task="synth_mc", models=[str(tiny_model)], out=str(tmp_path / "out"),
                            templates=str(write_pool(tmp_path / "pool.jsonl")), limit=ROWS, progress=False,
                            # 5 rows: batches of one question; 64: questions of different prompt lengths together
                            scoring="loglik", prompt_format="chat" if chat else "plain", batch_size=batch_size)
    results, records = evaluate(settings)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    task = get_task("synth_mc")
    examples = [task.example(row) for row in load_rows(task, split="test", limit=ROWS)]
    assert len(records) == len(POOL) * ROWS
    right = {t["id"]: 0 for t in POOL}
    for record in records:
        example = examples[int(record["row_id"])]
        expected = direct_logliks(model, tokenizer, record["prompt"], example.options, chat)
        assert record["option_logliks"] == pytest.approx(expected, abs=1e-4)
        best = LETTERS[max(range(len(expected)), key=expected.__getitem__)]
        assert record["output"] == best and record["parsed"] == best and record["parse_failed"] is False
        assert record["score"] == float(best == example.gold)
        right[record["template"]] += best == example.gold
    metrics = results["models"][str(tiny_model)]
    assert metrics["per_template"] == {t: n / ROWS for t, n in right.items()}
    assert metrics["parse_failure_rate"] == 0.0 and metrics["mean_tokens"] is None
    assert results["settings"]["scoring"] == "loglik"
    if chat:
        assert records[0]["prompt"].endswith("<|assistant|>")


def test_loglik_resumes_and_writes_outputs(tmp_path, tiny_model):
    settings = EvalSettings(task="synth_mc", models=[str(tiny_model)], out=str(tmp_path / "out"),
                            templates=str(write_pool(tmp_path / "pool.jsonl")), limit=ROWS, progress=False,
                            scoring="loglik")
    first, records = evaluate(settings)
    again, again_records = evaluate(settings)
    assert again["models"][str(tiny_model)]["generated_this_run"] == 0
    assert [r["option_logliks"] for r in again_records] == [r["option_logliks"] for r in records]
    assert again["models"][str(tiny_model)]["per_template"] == first["models"][str(tiny_model)]["per_template"]
    # A generate run in the same folder does not reuse the loglik log (and the other way round).
    generated, _ = evaluate(EvalSettings(**{**settings.__dict__, "scoring": "generate", "max_new_tokens": 2}))
    assert generated["models"][str(tiny_model)]["generated_this_run"] == len(POOL) * ROWS
    write_outputs(first, records, settings.out)
    saved = [json.loads(line) for line in (tmp_path / "out" / "generations.jsonl").read_text().splitlines()]
    assert all(len(r["option_logliks"]) == 4 for r in saved)
    assert "scored by option log-likelihood" in format_table(first).splitlines()[0]


def test_choice_batches_keep_a_question_whole_and_within_budget():
    requests = [ChoiceRequest(("t", str(i)), [1] * n, [[2] * 3, [2] * 5]) for i, n in enumerate([10, 40, 20, 30])]
    batches = choice_batches(requests, batch_size=4, max_batch_tokens=150, vocab_size=10)
    # 4 rows x 45 > 150; 4 x 35 <= 150; 6 rows > 4
    assert [[r.key[1] for r in b] for b in batches] == [["1"], ["3", "2"], ["0"]]
    assert sorted(r.key for b in batches for r in b) == sorted(r.key for r in requests)


@pytest.mark.parametrize("case", ["task", "backend"])
def test_loglik_bad_input_is_one_line(tmp_path, tiny_model, capsys, case):
    argv = ["eval", "--model", str(tiny_model), "--task", "synth_mc", "--scoring", "loglik", "--limit", "2",
            "--out", str(tmp_path / "out"), "--no-progress"]
    if case == "task":
        argv[argv.index("synth_mc")] = "synth_arith"
    else:
        argv += ["--backend", "vllm"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert {"task": "multiple-choice", "backend": "hf backend"}[case] in err
