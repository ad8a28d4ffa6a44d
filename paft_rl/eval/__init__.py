"""Robustness evaluation across many prompt templates (``paft-rl eval``).

`EvalSettings` is the one description of an evaluation: ``paft-rl eval`` reads it from ``--config eval.yaml`` and
``--key value`` flags, workflows build it (or a subclass of it) from their own YAML sections, and code builds it
directly. Its ``prompt_format`` and ``system_prompt`` are the training recipe's, so a model is judged on the very
prompt text it was trained on.

```python
>>> from paft_rl.eval import EvalSettings, evaluate, write_outputs
>>> results, records = evaluate(EvalSettings(task="piqa", models=["my-model"], out="eval-out", limit=100))
>>> write_outputs(results, records, "eval-out")
```
"""

from .metrics import model_metrics, prompt_sensitivity, summarize, template_accuracy
from .report import format_table, write_outputs
from .runner import EvalSettings, evaluate

__all__ = [
    "EvalSettings", "evaluate", "format_table", "model_metrics", "prompt_sensitivity", "summarize",
    "template_accuracy", "write_outputs",
]
