"""Train / held-out split of a generated pool, and the diversity numbers reported for it.

The split is `PromptPool.split` (a seeded hash of template ids, so adding a template never moves the
others); optionally the human-written seed templates all go to held-out, as PAFT evaluated on prompts
written by people while training on generated ones.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import replace

from prompt_pool.pool import PromptPool, Template

from .config import SplitConfig
from .filters import jaccard, ngrams, normalised

HUMAN_SOURCE = {"generator": "human", "mode": "seed"}


def seed_pool_templates(seed_texts: Sequence[str]) -> list[Template]:
    return [Template(f"seed-{i}", text, source=dict(HUMAN_SOURCE)) for i, text in enumerate(seed_texts)]


def split_pool(generated: list[Template], seeds: list[Template], settings: SplitConfig,
               name: str = "pool") -> PromptPool:
    """The final pool: generated templates (and seeds unless excluded) with splits assigned.

    With ``seeds_to_heldout`` the fraction applies to generated templates and every seed is held out;
    otherwise seeds and generated templates are split together.
    """
    seeds = seeds if settings.include_seeds else []
    if settings.include_seeds and settings.seeds_to_heldout:
        held = [replace(t, split="heldout") for t in seeds]
        return PromptPool(held + _split(generated, settings), name=name)
    return PromptPool(_split(seeds + generated, settings), name=name)


def _split(templates: list[Template], settings: SplitConfig) -> list[Template]:
    if len(templates) < 2:  # nothing to hold out without leaving training empty
        return [replace(t, split="train") for t in templates]
    return PromptPool(templates).split(settings.heldout_fraction, settings.seed).templates


def diversity(texts: Sequence[str], n: int = 3, max_pairs_texts: int = 400) -> dict:
    """Distinct-k (unique / total word k-grams, k = 1..n) and mean pairwise n-gram Jaccard similarity.

    Pairwise similarity uses the first ``max_pairs_texts`` texts (PAFT-sized pools are all of them).
    """
    stats: dict = {"templates": len(texts)}
    tokenised = [normalised(t).split() for t in texts]
    for k in range(1, n + 1):
        grams = [tuple(words[i:i + k]) for words in tokenised for i in range(len(words) - k + 1)]
        stats[f"distinct_{k}"] = round(len(set(grams)) / len(grams), 4) if grams else 0.0
    gram_sets = [ngrams(t, n) for t in texts[:max_pairs_texts]]
    pairs = [jaccard(a, b) for a, b in itertools.combinations(gram_sets, 2)]
    stats["mean_pairwise_similarity"] = round(statistics.fmean(pairs), 4) if pairs else 0.0
    return stats
