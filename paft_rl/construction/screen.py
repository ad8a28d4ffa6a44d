"""Optional accuracy screen: drop generated templates that a reference model answers badly with.

A template can be well-formed and still useless (it hides the options, or asks for the answer in a form
the reward cannot read). The screen runs `paft_rl.eval` (the same rendering, generation and reward as
``paft-rl eval``) on a few dev questions per template and keeps those at or above ``min_accuracy``.
Dev questions come from the task's *train* split by default, so the screen never looks at test data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from prompt_pool.io import write_pool
from prompt_pool.pool import PromptPool, Template

from .config import GenerateConfig
from .filters import FilterStep


def screen_templates(templates: list[Template], config: GenerateConfig, work_dir: str | Path,
                     log: Callable[[str], None] = lambda line: None) -> tuple[list[Template], FilterStep]:
    """Score every template on ``config.screen.dev_size`` dev questions; keep those reaching ``min_accuracy``.

    Kept templates carry their dev accuracy in ``source["screen_accuracy"]``. ``work_dir`` holds the
    candidate file and the evaluation's resume log, so a re-run does not generate again.
    """
    from ..eval import EvalSettings, evaluate  # lazy: torch is needed only for the screen
    from ..tasks import get_task

    if not templates:
        return [], FilterStep("accuracy_screen", 0, 0)
    screen = config.screen
    task = get_task(config.registry_task)
    work_dir = Path(work_dir)
    candidates = PromptPool([replace(t, split="train") for t in templates], name="screen-candidates")
    candidates_file = write_pool(candidates, work_dir / "candidates.jsonl")
    settings = EvalSettings(task=task.name, models=[screen.model], out=str(work_dir / "eval"),
                            templates=str(candidates_file), data=screen.data, split=screen.split or task.train_split,
                            limit=screen.dev_size, batch_size=screen.batch_size, progress=False)
    log(f"accuracy screen: {len(templates)} templates x {screen.dev_size} dev questions with {screen.model}")
    results, _ = evaluate(settings)
    accuracy = results["models"][screen.model]["per_template"]
    kept, reasons = [], []
    for template in templates:
        value = accuracy.get(template.id)
        if value is not None and value >= screen.min_accuracy:
            kept.append(replace(template, source={**(template.source or {}), "screen_accuracy": round(value, 4)}))
        else:
            shown = "no score" if value is None else f"{value:.2f}"
            reasons.append((template.id, f"dev accuracy {shown} below {screen.min_accuracy}"))
    return kept, FilterStep("accuracy_screen", len(templates), len(reasons), reasons[:5])

