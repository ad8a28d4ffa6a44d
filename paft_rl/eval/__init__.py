"""Robustness evaluation across many prompt templates (``paft-rl eval``).

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
