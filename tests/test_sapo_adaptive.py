"""SAPO's adaptive draws: weights follow softmax(-loss / T), draws follow the weights, runs are deterministic and
a resumed run draws exactly what the uninterrupted run drew."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from helpers import RecordingCollator, StopAfter
from paft_rl.configs import PaftSFTConfig
from paft_rl.selection.adaptive import STATE_FILE, AdaptiveWeights, saving_callback, softmax_scores
from paft_rl.tasks import load_rows
from paft_rl.trainers import PaftSFTTrainer, build_chooser, build_dataset
from paft_rl.trainers.common import resolve_task
from prompt_pool import UserError
from tiny import make_tiny_model_dir, make_tiny_tokenizer

COMMON = dict(task="synth_arith", max_steps=6, save_strategy="steps", save_steps=3, report_to="none", use_cpu=True,
              bf16=False, seed=2, logging_steps=1, learning_rate=0.05, template_draw="sapo", sapo_every=2,
              sapo_temperature=0.05)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def chooser_for(**overrides):
    args = PaftSFTConfig(**{"output_dir": "unused", **COMMON, **overrides})
    task = resolve_task(args)
    return args, task, build_chooser(args, task)


def test_softmax_scores_and_argmin():
    weights = softmax_scores({"a": -1.0, "b": -2.0, "c": -1.0}, 0.5)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["a"] == pytest.approx(weights["c"]) and weights["a"] / weights["b"] == pytest.approx(7.389, rel=1e-3)
    assert softmax_scores({"a": -1.0, "b": -0.5}, 0) == {"a": 0.0, "b": 1.0}


def test_draws_follow_loss_softmax_weights():
    _, _, chooser = chooser_for()
    adaptive = AdaptiveWeights(chooser, "sapo", every=2, temperature=0.5)
    ids = [t.id for t in chooser.pool.train]
    adaptive.losses = {template_id: 1.0 + 0.1 * i for i, template_id in enumerate(ids)}
    chooser.weights = adaptive.weights()
    counts = Counter(chooser.choose(row, 0).id for row in range(20_000))
    expected = {i: 20_000 * w for i, w in chooser.weights.items()}
    chi_square = sum((counts[i] - e) ** 2 / e for i, e in expected.items())
    # 24 templates: 23 degrees of freedom, critical value 49.73 at p = 0.001.
    assert chi_square < 49.73, chi_square
    assert counts[ids[0]] > counts[ids[-1]]  # lower loss, drawn more


def test_reward_signal_weights_and_optimism():
    _, _, chooser = chooser_for()
    adaptive = AdaptiveWeights(chooser, "sapo_reward", every=1, temperature=0.1)
    ids = [t.id for t in chooser.pool.train]
    adaptive.observe_rewards([ids[0], ids[0], ids[1], ids[2]], [1.0, 0.0, 0.0, float("nan")])
    weights = adaptive.weights()
    # ids[0] has mean 0.5, ids[1] mean 0.0; untried templates (ids[2] only saw a nan) get the best mean, 0.5.
    assert weights[ids[0]] == pytest.approx(weights[ids[2]]) and weights[ids[0]] > weights[ids[1]]


def test_bad_settings():
    _, _, chooser = chooser_for()
    with pytest.raises(UserError, match="sapo_every"):
        AdaptiveWeights(chooser, "sapo", every=0, temperature=0.1)
    with pytest.raises(UserError, match="one of sapo, sapo_reward"):
        AdaptiveWeights(chooser, "best", every=1, temperature=0.1)
    with pytest.raises(UserError, match="sapo draws need"):
        PaftSFTConfig(**{"output_dir": "unused", **COMMON, "sapo_temperature": -1.0})


def sapo_sft_run(model_dir, output_dir, stop_at=None, resume=None):
    args, task, chooser = chooser_for(output_dir=str(output_dir), per_device_train_batch_size=2, max_length=256)
    dataset = build_dataset(task, load_rows(task, limit=24, seed=0))
    tokenizer = make_tiny_tokenizer()
    collator = RecordingCollator(tokenizer, chooser, conversational=True)
    collator.seen = []
    trainer = PaftSFTTrainer(str(model_dir), args, dataset, collator, processing_class=tokenizer,
                             callbacks=[StopAfter(stop_at)] if stop_at else None)
    trainer.sapo = AdaptiveWeights(chooser, "sapo", args.sapo_every, args.sapo_temperature,
                                   probe=[task.example(row) for row in dataset.select(range(4))],
                                   tokenizer=tokenizer, conversational=True)
    trainer.add_callback(saving_callback(trainer.sapo))
    if resume:
        assert trainer.sapo.load(resume)
    trainer.train(resume_from_checkpoint=resume)
    return collator.seen, trainer.sapo


@pytest.mark.slow
def test_sft_sapo_draws_are_deterministic_and_survive_resume(model_dir, tmp_path):
    uninterrupted, adaptive = sapo_sft_run(model_dir, tmp_path / "a")
    again, _ = sapo_sft_run(model_dir, tmp_path / "c")
    assert again == uninterrupted
    assert adaptive.updated_step == 4 and len(adaptive.losses) == 24  # rescored at steps 0, 2 and 4
    first, _ = sapo_sft_run(model_dir, tmp_path / "b", stop_at=3)
    state = json.loads((tmp_path / "b" / "checkpoint-3" / STATE_FILE).read_text())
    assert state["updated_step"] == 2 and abs(sum(state["weights"].values()) - 1) < 1e-6
    second, _ = sapo_sft_run(model_dir, tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-3"))
    assert first + second == uninterrupted
    # Weights concentrate (T = 0.05): the steps after a rescoring draw from few templates.
    templates = [t for _, _, ids in uninterrupted for t in ids]
    assert len(set(templates)) < 24


@pytest.mark.slow
def test_cli_sapo_draw_writes_state_into_checkpoints(model_dir, tmp_path):
    from paft_rl.cli import main

    recipe = {**COMMON, "model_name_or_path": str(model_dir), "output_dir": str(tmp_path / "run"), "max_steps": 2,
              "save_steps": 2, "per_device_train_batch_size": 2, "data_limit": 8, "sapo_probe_rows": 3,
              "max_length": 256}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["sft", "--config", str(path)]) == 0
    state = json.loads((tmp_path / "run" / "checkpoint-2" / STATE_FILE).read_text())
    assert state["mode"] == "sapo" and len(state["losses"]) == 24


@pytest.mark.slow
def test_grpo_sapo_reward_draw_tracks_rollout_rewards(model_dir, tmp_path):
    from paft_rl.cli import main

    recipe = {**COMMON, "template_draw": "sapo_reward", "sapo_every": 1, "model_name_or_path": str(model_dir),
              "output_dir": str(tmp_path / "run"), "max_steps": 2, "save_steps": 2, "per_device_train_batch_size": 4,
              "num_generations": 2, "max_completion_length": 4, "data_limit": 8}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["grpo", "--config", str(path)]) == 0
    state = json.loads((tmp_path / "run" / "checkpoint-2" / STATE_FILE).read_text())
    assert state["mode"] == "sapo_reward" and sum(state["reward_count"].values()) == 2 * 4
    assert abs(sum(state["weights"].values()) - 1) < 1e-6


def test_sapo_reward_needs_grpo(model_dir, tmp_path, capsys):
    from paft_rl.cli import main

    recipe = {**COMMON, "template_draw": "sapo_reward", "model_name_or_path": str(model_dir),
              "output_dir": str(tmp_path / "run"), "data_limit": 8, "max_length": 256}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["sft", "--config", str(path)]) == 2
    assert "use it with paft-rl grpo" in capsys.readouterr().err
