"""SAPO's adaptive draws: weights follow softmax(-loss / T), the chooser draws by the weights the adaptive object
holds now (built by the trainer from its config), runs are deterministic and a resumed run draws exactly what the
uninterrupted run drew."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from helpers import RecordingCollator, StopAfter, digit_share, recording_grpo_trainer
from tiny import make_tiny_model_dir, make_tiny_tokenizer

from paft_rl.configs import PaftGRPOConfig, PaftSFTConfig
from paft_rl.selection.adaptive import STATE_FILE, AdaptiveWeights, softmax_scores
from paft_rl.tasks import load_rows
from paft_rl.trainers import PaftSFTTrainer, build_chooser, build_dataset
from paft_rl.trainers.preflight import resolve_task
from prompt_pool import UserError

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
    adaptive = AdaptiveWeights(chooser.pool, "sapo", every=2, temperature=0.5)
    chooser = chooser.following(adaptive)
    ids = [t.id for t in chooser.pool.train]
    adaptive.losses = {template_id: 1.0 + 0.1 * i for i, template_id in enumerate(ids)}
    adaptive.weights = adaptive.signal_weights()
    counts = Counter(chooser.choose(row, 0).id for row in range(20_000))
    expected = {i: 20_000 * w for i, w in chooser.weights.items()}
    chi_square = sum((counts[i] - e) ** 2 / e for i, e in expected.items())
    # 24 templates: 23 degrees of freedom, critical value 49.73 at p = 0.001.
    assert chi_square < 49.73, chi_square
    assert counts[ids[0]] > counts[ids[-1]]  # lower loss, drawn more


def test_reward_signal_weights_and_optimism():
    _, _, chooser = chooser_for()
    adaptive = AdaptiveWeights(chooser.pool, "sapo_reward", every=1, temperature=0.1)
    ids = [t.id for t in chooser.pool.train]
    adaptive.observe_rewards([ids[0], ids[0], ids[1], ids[2]], [1.0, 0.0, 0.0, float("nan")])
    weights = adaptive.signal_weights()
    # ids[0] has mean 0.5, ids[1] mean 0.0; untried templates (ids[2] only saw a nan) get the best mean, 0.5.
    assert weights[ids[0]] == pytest.approx(weights[ids[2]]) and weights[ids[0]] > weights[ids[1]]


def test_bad_settings():
    _, _, chooser = chooser_for()
    with pytest.raises(UserError, match="sapo_every"):
        AdaptiveWeights(chooser.pool, "sapo", every=0, temperature=0.1)
    with pytest.raises(UserError, match="one of sapo, sapo_reward"):
        AdaptiveWeights(chooser.pool, "best", every=1, temperature=0.1)
    with pytest.raises(UserError, match=r"^sapo_temperature must be >= 0, got -1.0$"):
        PaftSFTConfig(**{"output_dir": "unused", **COMMON, "sapo_temperature": -1.0})
    _, _, fixed = chooser_for(template_draw="fixed", fixed_template="{question}")
    with pytest.raises(UserError, match="need a pool draw"):
        fixed.following(AdaptiveWeights(chooser.pool, "sapo", every=1, temperature=0.1))


def test_chooser_draws_by_the_adaptive_weights_as_they_are_updated():
    """The chooser holds a reference: an update of the adaptive object changes the draws, nothing is written into
    the chooser."""
    _, _, plain = chooser_for()
    adaptive = AdaptiveWeights(plain.pool, "sapo_reward", every=2, temperature=0)
    chooser = plain.following(adaptive)
    ids = [t.id for t in chooser.pool.train]
    assert len({chooser.choose(row, 0).id for row in range(200)}) > 12  # no update yet: uniform draws
    adaptive.observe_rewards(ids, [1.0 if i == ids[3] else 0.0 for i in ids])
    adaptive.maybe_update(model=None, step=0)  # the reward signal needs no model
    assert {chooser.choose(row, 0).id for row in range(200)} == {ids[3]}  # temperature 0: argmax reward only
    adaptive.observe_rewards([ids[5]] * 10, [5.0] * 10)
    adaptive.maybe_update(model=None, step=1)  # not due before step 2: the draws stay
    assert {chooser.choose(row, 1).id for row in range(200)} == {ids[3]}
    adaptive.maybe_update(model=None, step=2)
    assert {chooser.choose(row, 2).id for row in range(200)} == {ids[5]}
    assert plain.weights is None and plain.adaptive is None  # following() left the caller's chooser as it was


def test_restore_reads_the_checkpoint_a_resume_starts_from(tmp_path):
    _, _, chooser = chooser_for()
    ids = [t.id for t in chooser.pool.train]
    saved = AdaptiveWeights(chooser.pool, "sapo_reward", every=2, temperature=0)
    for step, best in ((2, ids[1]), (4, ids[2])):
        saved.observe_rewards(ids, [float(step) if i == best else 0.0 for i in ids])
        saved.maybe_update(model=None, step=step)
        saved.save(tmp_path / f"checkpoint-{step}")
    (tmp_path / "checkpoint-6").mkdir()  # a checkpoint of a run without adaptive draws
    fresh = AdaptiveWeights(chooser.pool, "sapo_reward", every=2, temperature=0)
    fresh.restore(tmp_path, None)  # no resume: nothing read
    assert fresh.weights is None and fresh.updated_step is None
    fresh.restore(tmp_path, str(tmp_path / "checkpoint-2"))
    assert fresh.updated_step == 2 and fresh.weights[ids[1]] == 1.0
    with pytest.raises(UserError, match="checkpoint-6 holds no SAPO draw state"):
        fresh.restore(tmp_path, True)  # true: the last checkpoint, which has none
    (tmp_path / "checkpoint-6").rmdir()
    fresh.restore(tmp_path, True)
    assert fresh.updated_step == 4 and fresh.weights[ids[2]] == 1.0 and fresh.reward_count == saved.reward_count


def sapo_sft_run(model_dir, output_dir, stop_at=None, resume=None, **overrides):
    # The trainer builds SAPO's weights from the config: its probe set is the first sapo_probe_rows rows (`probe`).
    args, task, _ = chooser_for(**{"output_dir": str(output_dir), "per_device_train_batch_size": 2,
                                   "max_length": 256, "sapo_probe_rows": 4, **overrides})
    tokenizer = make_tiny_tokenizer()
    trainer = RecordingSFTTrainer(str(model_dir), args, load_rows(task, limit=24, seed=0), processing_class=tokenizer,
                                  callbacks=[StopAfter(stop_at)] if stop_at else None)
    trainer.paft_collator.seen = []
    trainer.train(resume_from_checkpoint=resume)  # a resume restores the checkpoint's sapo_state.json itself
    return trainer.paft_collator.seen, trainer.adaptive


class RecordingSFTTrainer(PaftSFTTrainer):
    collator_class = RecordingCollator


def probe(task, dataset):
    return [task.example(row) for row in dataset.select(range(4))]


def test_sft_trainer_given_adaptive_weights_draws_by_them_from_the_first_step(model_dir, tmp_path):
    """Temperature 0: every example of step 0 gets the template of lowest loss under the initial model."""
    from transformers import AutoModelForCausalLM

    from paft_rl.selection import score_templates

    args, task, chooser = chooser_for()
    dataset = build_dataset(task, load_rows(task, limit=24, seed=0))
    scores = score_templates(AutoModelForCausalLM.from_pretrained(str(model_dir)), make_tiny_tokenizer(), chooser.pool,
                             probe(task, dataset), n=None, prompt_format="chat")
    best = min(scores, key=lambda s: s.loss).template_id
    assert sorted(s.loss for s in scores)[1] - sorted(s.loss for s in scores)[0] > 1e-4  # a clear argmin
    seen, adaptive = sapo_sft_run(model_dir, tmp_path / "o", max_steps=1, save_strategy="no", sapo_temperature=0,
                                  per_device_train_batch_size=8)
    assert adaptive.updated_step == 0 and adaptive.weights[best] == 1.0
    assert [step for step, _, _ in seen] == [0] and seen[0][2] == [best] * 8


@pytest.mark.slow
def test_sft_sapo_draws_are_deterministic_and_survive_resume(model_dir, tmp_path):
    uninterrupted, adaptive = sapo_sft_run(model_dir, tmp_path / "a")
    again, _ = sapo_sft_run(model_dir, tmp_path / "c")
    assert again == uninterrupted
    assert adaptive.updated_step == 4 and len(adaptive.losses) == 24  # rescored at steps 0, 2 and 4
    first, _ = sapo_sft_run(model_dir, tmp_path / "b", stop_at=3)
    state = json.loads((tmp_path / "b" / "checkpoint-3" / STATE_FILE).read_text())
    assert state["updated_step"] == 2 and abs(sum(state["weights"].values()) - 1) < 1e-6
    second, resumed = sapo_sft_run(model_dir, tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-3"))
    assert first + second == uninterrupted and resumed.updated_step == 4
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


def sapo_grpo_run(model_dir, output_dir, stop_at=None, resume=None):
    """GRPO with sapo_reward; one generation serves two optimizer steps (checkpoint-1 lies inside a cycle)."""
    args = PaftGRPOConfig(**{**COMMON, "output_dir": str(output_dir), "template_draw": "sapo_reward", "sapo_every": 1,
                             "max_steps": 4, "save_steps": 1, "num_iterations": 2, "per_device_train_batch_size": 4,
                             "num_generations": 2, "max_completion_length": 4})
    task = resolve_task(args)
    trainer_class = recording_grpo_trainer()
    trainer_class.generated = []
    trainer = trainer_class(str(model_dir), [digit_share], args, load_rows(task, limit=12, seed=0),
                            processing_class=make_tiny_tokenizer(), callbacks=[StopAfter(stop_at)] if stop_at else None)
    trainer.train(resume_from_checkpoint=resume)
    return [tuple(map(str, entry[1:3])) for entry in trainer.generated], trainer.adaptive


@pytest.mark.slow
def test_grpo_sapo_reward_resume_inside_a_cycle_restores_the_rewards_seen(model_dir, tmp_path):
    uninterrupted, adaptive = sapo_grpo_run(model_dir, tmp_path / "a")
    first, _ = sapo_grpo_run(model_dir, tmp_path / "b", stop_at=1)
    second, resumed = sapo_grpo_run(model_dir, tmp_path / "b", resume=True)  # the last checkpoint: checkpoint-1
    assert first == uninterrupted[:4] and second == uninterrupted  # (row, template); the cycle is regenerated
    # The resumed run starts from checkpoint-1's rewards (the first generation's) and does not count the regenerated
    # cycle again, so the step-2 update sees what the uninterrupted run saw.
    assert sum(resumed.reward_count.values()) == sum(adaptive.reward_count.values()) == 2 * 4
    assert resumed.updated_step == adaptive.updated_step == 2 and resumed.weights == adaptive.weights
    assert len(set(adaptive.weights.values())) > 1  # the rewards made a difference to the draw weights
