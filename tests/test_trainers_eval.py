"""Evaluation during training (eval_strategy: steps) runs the held-out templates, the same (row, template) pairs
at every evaluation, and logs each template's eval reward (GRPO) or eval loss (SFT) with their mean, worst, std."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest
import torch
from helpers import ARITH_TEMPLATES, RecordLogs, recording_grpo_trainer, write_pool
from tiny import make_tiny_model_dir, make_tiny_tokenizer

from paft_rl.configs import PaftGRPOConfig, PaftSFTConfig
from paft_rl.tasks import load_rows
from paft_rl.trainers import PaftSFTCollator, PaftSFTTrainer, build_dataset
from paft_rl.trainers.preflight import resolve_task

HELDOUT = ("Held out zero: {question}", "Held out one -> {question}")
TRAIN_IDS = {tid for tid, _ in ARITH_TEMPLATES}
EVAL = dict(eval_strategy="steps", eval_steps=1, max_steps=2, report_to="none", use_cpu=True, bf16=False,
            logging_steps=1, save_strategy="no", seed=4, learning_rate=0.05, task="synth_arith")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return write_pool(tmp_path_factory.mktemp("pool") / "pool.jsonl", heldout=HELDOUT)


def rows_of(task, split, limit):
    return build_dataset(task, load_rows(task, split=split, limit=limit, seed=0))


def prefers_template_zero(prompts, completions, **kwargs):
    """1 for a prompt rendered from held-out template h0, else 0: a reward whose per-template means are known."""
    texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    return [1.0 if text.startswith("Held out zero") else 0.0 for text in texts]


def eval_metrics(logged, prefix="eval_paft/reward"):
    return [{k: v for k, v in entry.items() if k.startswith(prefix)} for entry in logged
            if any(k.startswith(prefix) for k in entry)]


def test_grpo_evaluates_heldout_templates_with_the_same_pairs_each_time(model_dir, pool, tmp_path):
    args = PaftGRPOConfig(output_dir=str(tmp_path / "o"), pool=str(pool), per_device_train_batch_size=4,
                          per_device_eval_batch_size=4, num_generations=2, max_completion_length=4, **EVAL)
    task = resolve_task(args)
    logged = []
    trainer = recording_grpo_trainer()(str(model_dir), [prefers_template_zero], args, rows_of(task, "train", 8),
                                       eval_dataset=rows_of(task, "test", 3), processing_class=make_tiny_tokenizer(),
                                       callbacks=[RecordLogs(logged)])
    trainer.generated = []
    trainer.train()
    pairs = {}
    for step, row, template_id, _ in trainer.generated:
        if template_id in ("h0", "h1"):
            pairs.setdefault(step, Counter())[(row, template_id)] += 1
        else:
            assert template_id in TRAIN_IDS
    assert sorted(pairs) == [1, 2]  # after each of the two steps
    expected = Counter({(row, t): 2 for row in range(3) for t in ("h0", "h1")})  # every row x template, G = 2
    assert pairs[1] == pairs[2] == expected
    metrics = eval_metrics(logged)
    assert len(metrics) == 2
    for entry in metrics:
        assert entry["eval_paft/reward_by_template/h0"] == 1.0 and entry["eval_paft/reward_by_template/h1"] == 0.0
        assert entry["eval_paft/reward_template_mean"] == 0.5 and entry["eval_paft/reward_template_worst"] == 0.0
        assert entry["eval_paft/reward_template_std"] == pytest.approx(0.5)


class EvalRecordingCollator(PaftSFTCollator):
    def __call__(self, rows, step, packing=None, evaluation=False):
        if evaluation:
            self.seen.append((step, [(row["row_id"], row["paft_eval_template"]) for row in rows]))
        return super().__call__(rows, step, packing, evaluation)


class EvalRecordingTrainer(PaftSFTTrainer):
    collator_class = EvalRecordingCollator


def template_losses_by_hand(model, collator, dataset) -> dict[str, float]:
    """Token-weighted loss per template, computed directly from padded batches of one template."""
    losses = {}
    for template_id in ("h0", "h1"):
        rows = [row for row in dataset if row["paft_eval_template"] == template_id]
        batch = collator(rows, 0, packing=False, evaluation=True)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        total = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum")
        losses[template_id] = float(total / (labels != -100).sum())
    return losses


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_sft_eval_loss_per_heldout_template(packing, model_dir, pool, tmp_path):
    args = PaftSFTConfig(output_dir=str(tmp_path / "o"), pool=str(pool), per_device_train_batch_size=4,
                         per_device_eval_batch_size=4, max_length=256, packing=packing, **EVAL)
    task = resolve_task(args)
    tokenizer = make_tiny_tokenizer()
    logged = []
    trainer = EvalRecordingTrainer(str(model_dir), args, rows_of(task, "train", 8),
                                   eval_dataset=rows_of(task, "test", 3), processing_class=tokenizer,
                                   callbacks=[RecordLogs(logged)])
    collator = trainer.paft_collator
    collator.seen = []
    trainer.train()
    by_step = {}
    for step, pairs in collator.seen:
        by_step.setdefault(step, []).extend(pairs)
    assert sorted(by_step) == [1, 2]
    assert sorted(by_step[1]) == sorted(by_step[2]) == sorted((r, t) for r in range(3) for t in ("h0", "h1"))
    metrics = eval_metrics(logged, "eval_paft/loss")
    assert len(metrics) == 2 and {"eval_paft/loss_by_template/h0", "eval_paft/loss_by_template/h1"} <= set(metrics[1])
    # The logged values are the per-template losses of the model as it was at the last evaluation.
    model = trainer.model.eval()
    by_hand = template_losses_by_hand(model, collator, trainer.eval_dataset)
    last = metrics[-1]
    for template_id, loss in by_hand.items():
        assert last[f"eval_paft/loss_by_template/{template_id}"] == pytest.approx(loss, rel=1e-4)
    assert last["eval_paft/loss_template_worst"] == pytest.approx(max(by_hand.values()), rel=1e-4)
    assert last["eval_paft/loss_template_std"] == pytest.approx(statistics.pstdev(by_hand.values()), rel=1e-3)


def cli_sft(model_dir, pool, tmp_path, capsys, *extra):
    from paft_rl.cli import main

    code = main(["sft", "--model_name_or_path", str(model_dir), "--task", "synth_arith", "--pool", str(pool),
                 "--output_dir", str(tmp_path / "out"), "--data_limit", "8", "--max_steps", "1", "--report_to", "none",
                 "--per_device_train_batch_size", "4", "--bf16", "false", "--max_length", "256", "--save_strategy",
                 "no", "--eval_strategy", "steps", "--eval_steps", "1", "--eval_data_limit", "2", *extra])
    return code, capsys.readouterr().err.strip().splitlines()


def test_cli_evaluates_during_training(model_dir, pool, tmp_path, capsys):
    import json

    code, err = cli_sft(model_dir, pool, tmp_path, capsys, "--save_strategy", "steps", "--save_steps", "1")
    assert code == 0, err[-3:]
    history = json.loads((tmp_path / "out" / "checkpoint-1" / "trainer_state.json").read_text())["log_history"]
    evaluation = next(entry for entry in history if "eval_loss" in entry)
    assert {"eval_paft/loss_by_template/h0", "eval_paft/loss_by_template/h1"} <= set(evaluation)
    assert not any(key.startswith("eval_paft/loss_by_template/a") for key in evaluation)  # no train template


@pytest.mark.parametrize("extra, expected", [
    (["--eval_templates", "no-such-pool.jsonl"], "no-such-pool"),
    (["--data", "FILE"], "set eval_data FILE"),
])
def test_cli_eval_mistakes_stop_with_one_line(extra, expected, model_dir, pool, tmp_path, capsys):
    if "FILE" in extra:
        data = tmp_path / "rows.jsonl"
        data.write_text('{"question": "1 + 1?", "answer": "#### 2"}\n' * 4)
        extra = [str(data) if item == "FILE" else item for item in extra]
    code, err = cli_sft(model_dir, pool, tmp_path, capsys, *extra)
    assert code == 2 and expected in err[-1], err[-3:]
    assert not (tmp_path / "out").exists()
