"""What a model answered, beyond right or wrong: how often its answer could not be read, and for multiple
choice which options it picks against which options are right.

Small models often sit near chance and lean on one option; their accuracy then measures how the golds are
balanced, not skill (SmolLM2-135M on 20 PIQA questions answered "A" 95 % of the time while 65 % of the golds
were "B"). Balanced accuracy, the mean over gold options of the share of those questions answered right, is
1 / (number of options) for a model that always gives the same answer, whatever the golds' balance; the
option distributions show the lean itself, and a lean far beyond the golds' is flagged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

NO_ANSWER = "none"  # the "option" of answers the reward could not read
BIAS_MARGIN = 0.25  # flag an option chosen this much more often (as a share of answers) than it is the gold


def parse_failure_rate(records: Iterable[dict]) -> float | None:
    """Share of scored cells (gold readable) whose answer the reward could not read."""
    scored = [r for r in records if r["score"] is not None]
    return sum(r["parse_failed"] for r in scored) / len(scored) if scored else None


def option_shares(letters: Iterable[str]) -> dict[str, float]:
    """Share of each option letter (and of ``none``), in letter order."""
    counts = Counter(letters)
    total = sum(counts.values())
    return {letter: counts[letter] / total for letter in sorted(counts, key=lambda k: (k == NO_ANSWER, k))}


def balanced_accuracy(records: list[dict]) -> float | None:
    """Mean over gold options of the accuracy on the questions whose gold is that option."""
    by_gold: dict[str, list[float]] = {}
    for record in records:
        by_gold.setdefault(record["gold"], []).append(record["score"])
    if not by_gold:
        return None
    return sum(sum(scores) / len(scores) for scores in by_gold.values()) / len(by_gold)


def option_bias(chosen: dict[str, float], gold: dict[str, float]) -> dict | None:
    """The option chosen most beyond its share of golds, when that excess is at least `BIAS_MARGIN`."""
    excess = {letter: share - gold.get(letter, 0.0) for letter, share in chosen.items() if letter != NO_ANSWER}
    if not excess:
        return None
    letter = max(excess, key=excess.get)
    if excess[letter] < BIAS_MARGIN - 1e-12:
        return None
    return {"option": letter, "chosen": chosen[letter], "gold": gold.get(letter, 0.0)}


def choice_summary(records: list[dict]) -> dict:
    """Chosen and gold option shares, balanced accuracy and the lean (if any) of one group of MC records."""
    scored = [r for r in records if r["score"] is not None]
    chosen = option_shares(r["parsed"] or NO_ANSWER for r in scored)
    gold = option_shares(r["gold"] for r in scored)
    return {"chosen": chosen, "gold": gold, "balanced_accuracy": balanced_accuracy(scored),
            "bias": option_bias(chosen, gold) if scored else None}


def answer_metrics(records: list[dict], multiple_choice: bool) -> dict:
    """Parse-failure rates (per template and overall) and, for multiple choice, answer distributions.

    Returns:
        `dict`: ``parse_failure_rate``, ``parse_failures_per_template``; for multiple choice also ``choices``
        (`choice_summary` of all cells), ``choices_per_template``, ``balanced_accuracy`` (mean over templates)
        and ``biased_templates`` (templates whose answers lean on one option, see `option_bias`).
    """
    by_template: dict[str, list[dict]] = {}
    for record in records:
        by_template.setdefault(record["template"], []).append(record)
    metrics = {
        "parse_failure_rate": parse_failure_rate(records),
        "parse_failures_per_template": {t: parse_failure_rate(rs) for t, rs in by_template.items()},
    }
    if not multiple_choice:
        return metrics
    per_template = {t: choice_summary(rs) for t, rs in by_template.items()}
    balanced = [s["balanced_accuracy"] for s in per_template.values() if s["balanced_accuracy"] is not None]
    metrics.update({
        "balanced_accuracy": sum(balanced) / len(balanced) if balanced else None,
        "choices": choice_summary(records),
        "choices_per_template": per_template,
        "biased_templates": [t for t, s in per_template.items() if s["bias"] is not None],
    })
    return metrics
