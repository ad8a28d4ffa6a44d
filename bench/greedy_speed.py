"""The evaluation's own greedy decoder (`paft_rl.eval.greedy`) against transformers' `generate`, alternated.

Both sides are `paft-rl eval`'s HF backend (`HFBackend.generate`) on the same requests: the exact prompts the
evaluation builds for a task's held-out templates (chat template, token ids), its generation budget, float32,
at most 64 prompts a batch, and the same key/value cache reuse (each template's shared prefix, the chat header
and instructions, computed once and copied into every batch). They differ only in how a batch is decoded:

- **wave**: `greedy.WaveGreedy` (prefill in small groups of nearly equal length, one wide decode batch that drops
  finished rows, the cache in preallocated buffers, grouped-query attention without key/value copies);
- **generate**: the backend without it: `model.generate` on length-sorted, left-padded batches (transformers'
  `sdpa` attention, its dynamic cache). Two batch settings: the backend's own (at most 2048 padded tokens a batch
  on CPU) and 64 rows a batch whatever their length (the wave decoder's decode width).

Runs alternate (wave, generate..., then the reverse order); each side's time is the median of its runs, and the
tokens of every side must equal the wave decoder's. With one torch thread (``--threads 1``) a run is timed in CPU
seconds of this process, which other processes on a shared machine do not inflate; otherwise in wall seconds.
Prints ``greedy_speed_ratio`` (the faster generate setting's time / the wave decoder's) last: `greedy.py` pays for
its upkeep at 1.3 or more.

    python bench/greedy_speed.py                    # PIQA (../shared/data), 4 held-out templates x 50 questions
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/greedy_speed.py   # as on an AVX2-only CPU
    python bench/greedy_speed.py --quick            # the tests' tiny model, synth_mc: checks the path only

Needs SmolLM2-135M-Instruct (`make model`); uses the synthetic multiple-choice task where ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# bench/rewards.py would shadow the `rewards` package: import from the repository root, not this folder.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from bench.common import cpu_kernels, tiny_model  # noqa: E402
from paft_rl.eval import EvalSettings  # noqa: E402
from paft_rl.eval.backends import HFBackend, Request  # noqa: E402
from paft_rl.eval.greedy import ATTENTION_NAME, WaveGreedy  # noqa: E402
from paft_rl.eval.runner import build_cells, generation_budget, prepare_model  # noqa: E402
from paft_rl.smollm import smollm2_dir  # noqa: E402
from paft_rl.tasks import get_task, load_task_pool  # noqa: E402
from prompt_pool import write_jsonl  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"
SIDES = ("wave", "generate, <=2048 tokens a batch", "generate, 64 rows a batch")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--templates", type=int, default=4, help="held-out templates (default 4)")
    parser.add_argument("--questions", type=int, default=50, help="questions per template (default 50)")
    parser.add_argument("--batch-size", type=int, default=64, help="most prompts a batch, both sides (default 64)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternated (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="the tests' tiny model, synth_mc, 2 x 4 prompts")
    args = parser.parse_args()
    if args.quick:
        args.templates, args.questions, args.repeats = 2, 4, 1
    return args


def eval_requests(model: str, task_name: str, data: str | None, args, work: Path):
    """The requests `paft-rl eval` sends its backend for these templates and questions, its generation budget and
    the prepared model (source and tokenizer)."""
    task = get_task(task_name)
    pool = load_task_pool(task).subset("heldout")
    pool.templates = pool.templates[: args.templates]
    settings = EvalSettings(task=task_name, models=[model], out=str(work / "eval"), data=data,
                            split="train" if data else None, templates=str(write_jsonl(pool, work / "pool.jsonl")),
                            limit=args.questions, batch_size=args.batch_size, progress=False)
    cells = build_cells(task, pool, settings)
    max_new_tokens, _ = generation_budget(task, cells, settings)
    prepared = prepare_model(model, cells, settings, max_new_tokens)
    return [Request(key, ids) for key, ids in prepared.prompt_ids.items()], max_new_tokens, prepared


def run_side(backend: HFBackend, waves: WaveGreedy, side: str, requests: list[Request]) -> tuple[float, dict]:
    """One pass over every request on one side; its seconds and the tokens of each request."""
    if side == "wave":
        backend.model.set_attn_implementation(ATTENTION_NAME)
        backend.waves, backend.max_batch_tokens = waves, waves.max_prefill_tokens
    else:
        backend.model.set_attn_implementation("sdpa")
        backend.waves = None
        backend.max_batch_tokens = waves.max_prefill_tokens if "2048" in side else 2**62
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    collected = []
    start = clock()
    backend.generate(requests, collected.extend)
    seconds = clock() - start
    return seconds, {key: (generation.text, generation.tokens) for key, generation in collected}


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="greedy-speed-"))
    model = tiny_model(work) if args.quick else str(smollm2_dir())
    piqa = DATA / "piqa" / "validation.jsonl"
    task_name, data = ("piqa", str(piqa)) if piqa.is_file() and not args.quick else ("synth_mc", None)
    requests, max_new_tokens, prepared = eval_requests(model, task_name, data, args, work)
    # float32 on a CPU, as the evaluation loads it.
    backend = HFBackend(prepared.source, prepared.tokenizer, max_new_tokens, batch_size=args.batch_size)
    waves = backend.waves
    if waves is None:
        raise SystemExit(f"{model}: the wave decoder does not cover this model; nothing to compare")
    lengths = [len(r.prompt_ids) for r in requests]
    templates = len({r.key[0] for r in requests})
    print(f"{task_name}: {templates} templates x {len(requests) // templates} questions = {len(requests)} "
          f"prompts of {statistics.fmean(lengths):.0f} tokens on average (longest {max(lengths)}), at most "
          f"{max_new_tokens} new tokens, batch {args.batch_size}; {Path(model).name}, float32; CPU: "
          f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {cpu_kernels()}, "
          f"{'CPU' if torch.get_num_threads() == 1 else 'wall'} seconds; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    outputs: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for side in SIDES if repeat % 2 == 0 else tuple(reversed(SIDES)):
            seconds, outputs[side] = run_side(backend, waves, side, requests)
            times[side].append(seconds)
            print(f"  run {repeat + 1} {side}: {seconds:.1f} s", flush=True)
    medians = {side: statistics.median(values) for side, values in times.items()}
    for side in SIDES:
        same = sum(outputs[side][key] == outputs["wave"][key] for key in outputs["wave"])
        print(f"{side}: median {medians[side]:.2f} s of {len(times[side])} runs; tokens equal to the wave "
              f"decoder's on {same}/{len(requests)} prompts")
    best = min(SIDES[1:], key=medians.get)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"greedy_speed_ratio {medians[best] / medians['wave']:.2f} ({best} / wave; greedy.py stays at >= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
