"""Helpers several test modules share: a template pool and chooser, a reward that gives a tiny model a gradient,
trainers and collators that record what they drew, weight digests, checks that full and LoRA trainings moved their
weights, and the SLURM script's dry run. Test modules import them from here (as they import ``tiny``), never from
one another, so a test file can be renamed or run alone; the torchrun and accelerate workers find this module on
their ``PYTHONPATH`` too."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from transformers import TrainerCallback

from paft_rl.trainers import PaftSFTCollator, TemplateChooser
from paft_rl.trainers.draws import DRAWS, FixedDraw
from prompt_pool import PromptPool, Template

ROOT = Path(__file__).resolve().parents[1]
GROUP = 4  # num_generations of the multi-process GRPO workers: 6 completions per rank -> 3 groups of 4

ARITH_TEMPLATES = [
    ("a1", "Question: {question}\nAnswer:"), ("a2", "Solve this: {question} The answer is"),
    ("a3", "{question}\nThink briefly, then give the number."), ("a4", "Problem -> {question} ->"),
    ("a5", "Work it out. {question}"), ("a6", "Q: {question} A:"),
]


def write_pool(path: Path, templates=ARITH_TEMPLATES, heldout=("Held out: {question}",)) -> Path:
    lines = [{"id": tid, "text": text, "split": "train"} for tid, text in templates]
    lines += [{"id": f"h{i}", "text": text, "split": "heldout"} for i, text in enumerate(heldout)]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def chooser(draw="uniform", every=1, fixed=None) -> TemplateChooser:
    """A chooser over ARITH_TEMPLATES with seed 0 (``fixed``: the template of a fixed draw)."""
    pool = PromptPool([Template(tid, text) for tid, text in ARITH_TEMPLATES], name="t")
    return TemplateChooser(FixedDraw(pool, 0, fixed) if fixed else DRAWS[draw](pool, 0), every=every)


def digit_share(prompts, completions, **kwargs):
    """A reward that varies between random completions, so the tiny model gets a gradient."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) + 0.01 * len(text) for text in texts]


class RecordLogs(TrainerCallback):
    def __init__(self, into: list):
        self.into = into

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.into.append(dict(logs or {}))


class StopAfter(TrainerCallback):
    """Interrupts training after ``step`` (the checkpoint of that step is still written)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


class RecordingCollator(PaftSFTCollator):
    """Records (step, row ids, template ids) of every batch; set ``seen = []`` before training."""

    def __call__(self, rows, step):
        self.seen.append((step, [row["row_id"] for row in rows], self.texts(rows, step)[2]))
        return super().__call__(rows, step)


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


def torchrun(script_args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2`` (as ``python -m torch.distributed.run``, so it is this interpreter's)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(20000 + (os.getpid() * 7 + len(str(tmp_path))) % 20000), *script_args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def assert_groups_share_one_prompt(records: list[dict], steps: int = 2) -> None:
    """Every (step, row) group has GROUP completions across both ranks, all with one template and prompt."""
    prompts_by_group = defaultdict(list)
    for rank_records in records:
        for step, row_id, template_id, prompt in rank_records["generated"]:
            prompts_by_group[(step, row_id)].append((template_id, json.dumps(prompt)))
    assert len(prompts_by_group) == steps * 3  # 3 groups per step
    for group, members in prompts_by_group.items():
        assert len(members) == GROUP, group
        assert len(set(members)) == 1, f"group {group} saw different prompts: {members}"
    assert len({members[0][0] for members in prompts_by_group.values()}) > 1  # groups draw different templates
    on_rank = [{tuple(x[:2]) for x in rank_records["generated"]} for rank_records in records]
    assert on_rank[0] & on_rank[1], "expected a group whose completions are generated on both ranks"


# ---------------------------------------------------------------------------- trained weights
def assert_weights_trained(model_dir: Path, output_dir: Path) -> None:
    """The full model saved in ``output_dir`` has the base model's tensors and dtypes, and training moved some."""
    from safetensors.torch import load_file

    before, after = load_file(model_dir / "model.safetensors"), load_file(output_dir / "model.safetensors")
    assert {n: t.dtype for n, t in after.items()} == {n: t.dtype for n, t in before.items()}
    assert any(not torch.equal(before[name], after[name]) for name in before)


# ---------------------------------------------------------------------------- LoRA
def assert_adapter_trained(model_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    """The adapter saved in ``adapter_dir`` moved away from PEFT's initial state, and merged into the base model in
    ``model_dir`` it changes exactly the weights of its target modules and nothing else. Returns the merged weights.

    PEFT starts every ``lora_B`` at zero, so an untrained adapter is the identity: its file exists, nothing moved."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    lora_b = {name: t for name, t in load_file(adapter_dir / "adapter_model.safetensors").items() if "lora_B" in name}
    assert lora_b, f"{adapter_dir} holds no lora_B weights"
    assert all(t.any() for t in lora_b.values()), f"lora_B still at its initial zeros: {sorted(lora_b)}"
    targets = set(json.loads((adapter_dir / "adapter_config.json").read_text())["target_modules"])
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    expected = {f"{name}.weight" for name, _ in base.named_modules() if name.rsplit(".", 1)[-1] in targets}
    before = {name: t.clone() for name, t in base.state_dict().items()}
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().state_dict()
    assert merged.keys() == before.keys()
    assert {name for name in before if not torch.equal(before[name], merged[name])} == expected
    return merged


# ---------------------------------------------------------------------------- the SLURM script, without a cluster
SCRIPT = ROOT / "launch" / "slurm" / "paft_grpo_multinode.slurm"

SCONTROL = '#!/bin/bash\n[ "$1 $2" = "show hostnames" ] || exit 1\ntr "," "\\n" <<< "$3"\n'


def write_tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def run_slurm_script(nodes: int, args: list[str], tools: dict[str, str] | None = None, timeout: int = 60,
                     **env) -> subprocess.CompletedProcess:
    """Run the script with fake SLURM variables (nodes node01..nodeNN) and an ``scontrol`` (plus ``tools``) on PATH."""
    with tempfile.TemporaryDirectory() as shim:
        for name, body in {"scontrol": SCONTROL[len("#!/bin/bash\n"):], **(tools or {})}.items():
            write_tool(Path(shim), name, body)
        hosts = ",".join(f"node{i:02d}" for i in range(1, nodes + 1))
        environment = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": hosts,
                       "SLURM_NNODES": str(nodes), **env}
        return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=environment, capture_output=True,
                              text=True, timeout=timeout)


def dry_run(nodes: int, args: list[str], **env) -> str:
    result = run_slurm_script(nodes, args, DRY_RUN="1", **env)
    assert result.returncode == 0, result.stderr
    return result.stdout


class ScriptedBackend:
    """An eval backend answering each (template, row) cell with a scripted text, so the evaluation's numbers can be
    checked against hand-computed ones: a load of 0.5 s and 2 tokens in 0.25 s per answer."""

    name = "scripted"
    answers: dict = {}

    def __init__(self, source, tokenizer, max_new_tokens, **_):
        self.load_seconds = 0.5

    def generate(self, requests, on_batch, progress=None):
        from paft_rl.eval.backends import Generation

        on_batch([(r.key, Generation(self.answers[r.key], 2, 0.25)) for r in requests])


def use_scripted_backend(monkeypatch, answers: dict) -> None:
    """Evaluate with `ScriptedBackend` as the hf backend, answering ``answers[(template, row)]``."""
    from paft_rl.eval import backends

    monkeypatch.setattr(ScriptedBackend, "answers", answers)
    monkeypatch.setitem(backends.BACKENDS, "hf", ScriptedBackend)
