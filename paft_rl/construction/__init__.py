"""Building template pools with LLMs (PAFT phase 1): dual prompting, parsing, filtering, splitting.

PAFT asks an ensemble of models for templates in two modes (few-shot from human-written examples,
zero-shot from a task description), filters the candidates, and splits them into train and unseen
held-out templates. Entry points: `load_config` + `generate_pool`, or ``paft-rl pool generate``.
It lives in `paft_rl`, not in the data layer `prompt_pool`, because a pool is built *for a task*: it reads the
task registry and screens candidates with the evaluation machinery. Nothing here imports torch until a config
needs a local model or the accuracy screen.
"""

from .cache import ResponseCache
from .config import (
    FilterConfig,
    GenerateConfig,
    GeneratorConfig,
    RequestConfig,
    ScreenConfig,
    SplitConfig,
    TaskSpec,
    config_from_dict,
    load_config,
)
from .filters import apply_filters, exact_duplicates, jaccard, near_duplicates, ngrams, normalised
from .parse import parse_templates
from .prompts import build_requests
from .run import GenerateResult, generate_pool, report_text
from .split import diversity, split_pool

__all__ = [
    "FilterConfig", "GenerateConfig", "GenerateResult", "GeneratorConfig", "RequestConfig", "ResponseCache",
    "ScreenConfig", "SplitConfig", "TaskSpec", "apply_filters", "build_requests", "config_from_dict", "diversity",
    "exact_duplicates", "generate_pool", "jaccard", "load_config", "near_duplicates", "ngrams", "normalised",
    "parse_templates", "report_text", "split_pool",
]
