"""SAPO during training: template draw weights that follow the model as it learns (beyond the paper).

Two signals, both turned into draw weights ``softmax(score / temperature)`` over the train templates:

- ``sapo`` (SFT and GRPO): every M optimizer steps, each template's task loss on a fixed probe set under the
  current model (`score_templates`); lower loss, more weight. Temperature 0 puts all weight on the argmin.
- ``sapo_reward`` (GRPO): the running mean reward of each template's rollout groups, a free by-product of
  training; higher reward, more weight. Templates not yet tried get the best mean so far, so each is tried.

The trainer builds its `AdaptiveWeights` from its config (``template_draw: sapo`` or ``sapo_reward``): it calls
`maybe_update` and `observe_rewards` at the points of its loop where the step and the rewards are known, and its
`TemplateChooser` holds a reference and draws by ``weights`` as they are now, so nothing writes weights into the
chooser.

Determinism: weights change only at the first update call at or after each multiple of M, are computed from what
every rank shares (the same model and probe set; gathered rewards), are broadcast from the main process, and are
saved into each checkpoint (``sapo_state.json``) so a resumed run draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_pool import PromptPool, UserError

from ..formatting import PromptFormat
from .scoring import score_templates

STATE_FILE = "sapo_state.json"
MODES = ("sapo", "sapo_reward")


@dataclass
class AdaptiveWeights:
    """SAPO's draw weights over a pool's train templates, kept up to date as the model learns.

    Args:
        pool (`PromptPool`): the pool whose train templates are drawn (the chooser's pool).
        mode (`str`): ``sapo`` (loss on a probe set) or ``sapo_reward`` (running mean reward, GRPO).
        every (`int`): M, optimizer steps between weight updates.
        temperature (`float`): softmax temperature; 0 = argmin loss / argmax reward.
        probe (`list`): task `Example`s scored in ``sapo`` mode.
        tokenizer, prompt_format (`PromptFormat`): the prompts' tokenizer and format, as in training.
        batch_size (`int`): sequences per scoring forward pass.
        weights (`dict[str, float]`, *optional*): the current draw weights by template id; `None` (uniform draws)
            until the first update.

    ```python
    >>> adaptive = AdaptiveWeights(chooser.pool, "sapo", every=50, temperature=0.1, probe=examples[:64],
    ...                            tokenizer=tokenizer, prompt_format=PromptFormat(chat=True))
    >>> chooser = chooser.following(adaptive)
    ```
    """

    pool: PromptPool
    mode: str
    every: int
    temperature: float
    probe: list = field(default_factory=list)
    tokenizer: Any = None
    prompt_format: PromptFormat = PromptFormat()
    batch_size: int = 16
    updated_step: int | None = None
    losses: dict[str, float] = field(default_factory=dict)
    reward_sum: dict[str, float] = field(default_factory=dict)
    reward_count: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"adaptive template draw must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.every < 1:
            raise UserError(f"sapo_every must be at least 1 step, got {self.every}")
        if self.temperature < 0:
            raise UserError(f"sapo_temperature must be >= 0, got {self.temperature}")
        if len(self.pool.train) < 2:
            raise UserError("adaptive SAPO draws need at least 2 train templates in the pool")

    # ------------------------------------------------------------------ updates
    def due(self, step: int) -> bool:
        """True at the first call, and at the first call at or after each later multiple of M.

        GRPO calls this only at generation steps (every ``steps_per_generation`` steps), which need not fall on
        multiples of M: the update then happens at the first generation past the multiple, never skipped.
        """
        return self.updated_step is None or step // self.every > self.updated_step // self.every

    def maybe_update(self, model, step: int) -> None:
        """Recompute the weights when step ``step`` is the first call in a new block of M steps (or the first)."""
        if not self.due(step):
            return
        if self.mode == "sapo":
            self.losses = _broadcast(self._score(model))
        self.updated_step = step
        self.weights = self.signal_weights()

    def _score(self, model) -> dict[str, float]:
        scores = score_templates(model, self.tokenizer, self.pool, self.probe, n=None,
                                 batch_size=self.batch_size, prompt_format=self.prompt_format)
        return {s.template_id: s.loss for s in scores}

    def observe_rewards(self, template_ids: list[str], rewards: list[float]) -> None:
        """Fold one generation batch's rewards (already gathered from every process) into the running means."""
        for template_id, reward in zip(template_ids, rewards, strict=True):
            if reward is None or math.isnan(reward):
                continue
            self.reward_sum[template_id] = self.reward_sum.get(template_id, 0.0) + float(reward)
            self.reward_count[template_id] = self.reward_count.get(template_id, 0) + 1

    def signal_weights(self) -> dict[str, float]:
        """Draw weights over the train templates from the current signal (what the next update sets)."""
        ids = [t.id for t in self.pool.train]
        if self.mode == "sapo":
            scores = {i: -self.losses[i] for i in ids}
        else:
            means = {i: self.reward_sum[i] / self.reward_count[i] for i in ids if self.reward_count.get(i)}
            optimistic = max(means.values(), default=0.0)
            scores = {i: means.get(i, optimistic) for i in ids}
        return softmax_scores(scores, self.temperature)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"mode": self.mode, "updated_step": self.updated_step, "losses": self.losses,
                "reward_sum": self.reward_sum, "reward_count": self.reward_count,
                "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != self.mode:
            raise UserError(f"the checkpoint was trained with template_draw {state.get('mode')!r}, not {self.mode!r}")
        self.updated_step = state["updated_step"]
        self.losses = state["losses"]
        self.reward_sum = state["reward_sum"]
        self.reward_count = {k: int(v) for k, v in state["reward_count"].items()}
        self.weights = state["weights"]

    def save(self, checkpoint_dir: str | Path) -> None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        (Path(checkpoint_dir) / STATE_FILE).write_text(json.dumps(self.state_dict(), indent=2) + "\n")

    def load(self, checkpoint_dir: str | Path) -> bool:
        path = Path(checkpoint_dir) / STATE_FILE
        if not path.is_file():
            return False
        self.load_state_dict(json.loads(path.read_text()))
        return True

    def restore(self, output_dir: str | Path, resume: bool | str | None) -> None:
        """Before ``train(resume_from_checkpoint=resume)``: the state saved in the checkpoint the run resumes from
        (``True``: the last one in ``output_dir``), so it draws exactly what the uninterrupted run drew."""
        if not resume:
            return
        from transformers.trainer_utils import get_last_checkpoint

        checkpoint = get_last_checkpoint(str(output_dir)) if resume is True else resume
        if checkpoint and not self.load(checkpoint):  # no checkpoint at all: Trainer.train says so
            raise UserError(f"{checkpoint} holds no SAPO draw state ({STATE_FILE}): resume it with the "
                            "template_draw it was trained with")


def softmax_scores(scores: dict[str, float], temperature: float) -> dict[str, float]:
    """Draw weights ``softmax(score / temperature)`` by template id (higher score, more weight).

    SAPO's loss signal passes ``-loss``; temperature 0 gives all weight to the best score (ties: the first id).
    """
    if temperature < 0:
        raise UserError(f"SAPO temperature must be >= 0, got {temperature}")
    if temperature == 0:
        best = max(scores, key=lambda i: (scores[i], -list(scores).index(i)))
        return {i: float(i == best) for i in scores}
    top = max(scores.values())
    exps = {i: math.exp((s - top) / temperature) for i, s in scores.items()}
    total = sum(exps.values())
    return {i: e / total for i, e in exps.items()}


def _broadcast(value: dict[str, float]) -> dict[str, float]:
    """The main process's value on every process (identical floats, whatever each rank computed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def saving_callback(adaptive: AdaptiveWeights):
    """A `TrainerCallback` that writes the adaptive state into every checkpoint folder (main process)."""
    from transformers import TrainerCallback

    class SapoStateCallback(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                adaptive.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return SapoStateCallback()
