"""Two processes (torchrun, gloo, CPU): every GRPO group sees one prompt on every rank, groups draw different
templates, and the weights stay identical across ranks. The same file is the worker torchrun starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
GROUP = 4  # num_generations; 6 completions per rank -> 3 groups of 4, the middle one split across the ranks


def torchrun(script_args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    torchrun_bin = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun_bin is None:
        pytest.skip("torchrun is not installed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE),
           "TOKENIZERS_PARALLELISM": "false"}
    command = [torchrun_bin, "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
               *script_args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_share_group_prompts_and_weights(tmp_path):
    from tiny import make_tiny_model_dir

    model_dir = make_tiny_model_dir(tmp_path)
    result = torchrun([__file__, "grpo", str(model_dir), str(tmp_path / "out")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((tmp_path / "out" / f"rank{rank}.json").read_text()) for rank in (0, 1)]

    prompts_by_group = defaultdict(list)
    for rank_records in records:
        for step, row_id, template_id, prompt in rank_records["generated"]:
            prompts_by_group[(step, row_id)].append((template_id, json.dumps(prompt)))
    assert len(prompts_by_group) == 2 * 3  # 2 steps x 3 groups
    for group, members in prompts_by_group.items():
        assert len(members) == GROUP, group
        assert len(set(members)) == 1, f"group {group} saw different prompts: {members}"
    assert len({members[0][0] for members in prompts_by_group.values()}) > 1  # groups draw different templates
    split = [g for g in prompts_by_group if g in {tuple(x[:2]) for x in records[0]["generated"]}
             and g in {tuple(x[:2]) for x in records[1]["generated"]}]
    assert split, "expected a group whose completions are generated on both ranks"
    assert records[0]["weights"] == records[1]["weights"]
    assert records[0]["weights"] != records[0]["initial_weights"]


# ---------------------------------------------------------------------------- worker (run by torchrun)
def weights_digest(model) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def digit_share(prompts, completions, **kwargs):
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) + 0.01 * len(text) for text in texts]


def recording_grpo_trainer():
    """A PaftGRPOTrainer that records every prompt as it reaches TRL's generation dispatch."""
    from paft_rl.trainers.grpo import PaftGRPOTrainer

    class Recording(PaftGRPOTrainer):
        generated: list = []

        def _generate(self, prompts):
            ids = self._paft_group_template_ids
            rows = self._paft_rows
            self.generated.extend([self.state.global_step, r, t, p] for r, t, p in zip(rows, ids, prompts))
            return super()._generate(prompts)

        def _generate_and_score_completions(self, inputs):
            self._paft_rows = [row["row_id"] for row in inputs]
            return super()._generate_and_score_completions(inputs)

    return Recording


def grpo_worker(model_dir: str, output_dir: str, **overrides) -> None:
    from paft_rl.configs import PaftGRPOConfig
    from paft_rl.tasks import load_rows
    from paft_rl.trainers import build_chooser, build_dataset
    from paft_rl.trainers.common import resolve_task
    from tiny import make_tiny_tokenizer

    options = dict(output_dir=output_dir, task="synth_arith", max_steps=2, per_device_train_batch_size=6,
                   num_generations=GROUP, max_completion_length=4, learning_rate=0.05, report_to="none",
                   use_cpu=True, bf16=False, save_strategy="no", seed=1, logging_steps=1)
    args = PaftGRPOConfig(**{**options, **overrides})
    task = resolve_task(args)
    dataset = build_dataset(task, load_rows(task, limit=12, seed=0))
    trainer = recording_grpo_trainer()(model_dir, [digit_share], args, dataset, build_chooser(args, task),
                                       conversational=True, processing_class=make_tiny_tokenizer())
    initial = weights_digest(trainer.model)
    trainer.train()
    record = {"generated": trainer.generated, "weights": weights_digest(trainer.model), "initial_weights": initial}
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    (Path(output_dir) / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    mode, model_path, out = sys.argv[1:4]
    if mode == "grpo":
        grpo_worker(model_path, out)
