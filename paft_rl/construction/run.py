"""``pool generate`` end to end: requests -> responses -> candidates -> filters -> split -> pool + report."""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prompt_pool.errors import UserError
from prompt_pool.io import write_pool
from prompt_pool.pool import PromptPool, Template

from .cache import ResponseCache
from .collect import Collection, collect_responses
from .config import GenerateConfig
from .filters import FilterStep, apply_filters
from .parse import parse_templates
from .prompts import build_requests
from .split import diversity, seed_pool_templates, split_pool

MODE_TAGS = {"few_shot": "fs", "zero_shot": "zs"}


@dataclass
class GenerateResult:
    """The pool written, the report, and one line per failed generator (empty when all went well)."""

    pool: PromptPool
    report: dict
    failures: list[str]


def default_cache_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".cache.jsonl")


def default_report_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".report.json")


def generate_pool(config: GenerateConfig, out: str | Path, cache_path: str | Path | None = None,
                  log: Callable[[str], None] | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> GenerateResult:
    """Build a pool from ``config`` and write it to ``out`` (JSONL).

    Args:
        config (`GenerateConfig`): the run.
        out (`str` or `Path`): pool file to write.
        cache_path (`str` or `Path`, *optional*): response cache; defaults to ``config.cache`` or
            ``<out>.cache.jsonl``; an empty string disables caching.
        log (`Callable[[str], None]`, *optional*): progress lines (default: stderr).
        sleep (`Callable[[float], None]`): backoff wait, replaceable in tests.
    """
    log = log or (lambda line: print(f"[pool generate] {line}", file=sys.stderr, flush=True))
    start = time.monotonic()
    requests = build_requests(config)
    cache = ResponseCache(cache_location(config, out, cache_path))
    collection = collect_responses(config, requests, cache, log=log, sleep=sleep)
    if not collection.responses:
        raise UserError("no generator returned anything: " + " | ".join(collection.failure_lines()))
    candidates, parsed = candidates_from_responses(collection.responses, config)
    seeds = seed_pool_templates(config.seed_templates)
    kept, steps = apply_filters(candidates, config.task, config.filters, config.seed_templates)
    if config.screen.enabled:
        from .screen import screen_templates

        work_dir = Path(out).with_name(Path(out).stem + ".screen")
        kept, step = screen_templates(kept, config, work_dir, log=log)
        steps.append(step)
    if not kept:
        raise UserError(f"none of {len(candidates)} generated candidates survived the filters ({_steps_line(steps)}); "
                        "loosen the filters, raise per_model_per_mode or use stronger generators")
    pool = split_pool(kept, seeds, config.split, name=Path(out).name)
    write_pool(pool, out)
    report = build_report(config, collection, parsed, candidates, steps, pool, time.monotonic() - start)
    log(f"wrote {len(pool)} templates ({len(pool.train)} train, {len(pool.heldout)} held-out) to {out}")
    return GenerateResult(pool, report, collection.failure_lines())


def cache_location(config: GenerateConfig, out, cache_path) -> Path | None:
    chosen = cache_path if cache_path is not None else config.cache
    if chosen == "":
        return None
    return Path(chosen) if chosen is not None else default_cache_path(out)


def candidates_from_responses(responses: list[dict], config: GenerateConfig) -> tuple[list[Template], Counter]:
    """Parse every response; keep the first ``per_model_per_mode`` candidates of each generator and mode.

    Returns the candidates (with provenance in ``source``) and the number parsed per (generator, mode).
    """
    parsed: Counter = Counter()
    candidates = []
    for response in responses:
        group = (response["generator"], response["mode"])
        for text in parse_templates(response["text"], config.task.fields):
            parsed[group] += 1
            if parsed[group] <= config.per_model_per_mode:
                candidates.append(_candidate(text, response))
    return candidates, parsed


def _candidate(text: str, response: dict) -> Template:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", response["generator"]).strip("-").lower() or "gen"
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    source = {key: response[key] for key in ("generator", "model", "backend", "mode", "temperature", "time", "sample")}
    source["request"] = response["key"][:16]
    return Template(f"{slug}-{MODE_TAGS[response['mode']]}-{digest}", text, source=source)


def build_report(config: GenerateConfig, collection: Collection, parsed: Counter, candidates: list[Template],
                 steps: list[FilterStep], pool: PromptPool, seconds: float) -> dict:
    """Everything a user needs to judge the run: requests, per-generator counts, filters, split, diversity."""
    kept_by = Counter((t.source["generator"], t.source["mode"]) for t in pool.templates
                      if t.source.get("generator") != "human")
    cand_by = Counter((t.source["generator"], t.source["mode"]) for t in candidates)
    generators = {}
    for name, outcome in collection.outcomes.items():
        generators[name] = {
            "requests": outcome.requests, "cached": outcome.cached, "received": outcome.received,
            "failed": outcome.failed, "retries": outcome.retries, "fatal": outcome.fatal, "errors": outcome.errors[:3],
            "modes": {mode: {"parsed": parsed[(name, mode)], "candidates": cand_by[(name, mode)],
                             "kept": kept_by[(name, mode)]} for mode in config.modes},
        }
    n = config.filters.ngram
    return {
        "task": config.task.name,
        "requests": {key: sum(getattr(o, key) for o in collection.outcomes.values())
                     for key in ("requests", "cached", "received", "failed", "retries")},
        "generators": generators,
        "candidates": len(candidates),
        "filters": [step.to_dict() for step in steps],
        "pool": {"templates": len(pool), "train": len(pool.train), "heldout": len(pool.heldout),
                 "seeds": sum(1 for t in pool.templates if (t.source or {}).get("generator") == "human")},
        "diversity": {"all": diversity([t.text for t in pool.templates], n),
                      "train": diversity([t.text for t in pool.train], n),
                      "heldout": diversity([t.text for t in pool.heldout], n)},
        "failures": collection.failure_lines(),
        "seconds": {"generation": round(collection.seconds, 1), "total": round(seconds, 1)},
    }


def _steps_line(steps: list[FilterStep]) -> str:
    """``placeholders -3 (e.g. does not use required field {question}: add it), length -1, ...``"""
    parts = []
    for step in steps:
        example = f" (e.g. {step.examples[0][1]})" if step.examples else ""
        parts.append(f"{step.name} -{step.dropped}{example}")
    return ", ".join(parts)


def report_text(report: dict) -> str:
    """A short human-readable summary of a report."""
    r = report["requests"]
    lines = [f"requests: {r['requests']} ({r['cached']} cached, {r['received']} received, {r['failed']} failed, "
             f"{r['retries']} retries)"]
    for name, g in report["generators"].items():
        modes = ", ".join(f"{m} {v['candidates']}->{v['kept']}" for m, v in g["modes"].items())
        lines.append(f"  {name}: {modes}" + (f"  FAILED: {g['fatal']}" if g["fatal"] else ""))
    lines.append(f"candidates: {report['candidates']}")
    lines += [f"  {s['step']:<17} {s['in']:>5} -> {s['out']:>5}  (-{s['dropped']})" for s in report["filters"]]
    p, d = report["pool"], report["diversity"]["all"]
    lines.append(f"pool: {p['templates']} templates ({p['train']} train, {p['heldout']} held-out, {p['seeds']} seeds)")
    lines.append(f"diversity: distinct-1 {d.get('distinct_1', 0)}, distinct-2 {d.get('distinct_2', 0)}, "
                 f"mean pairwise similarity {d['mean_pairwise_similarity']}")
    lines += [f"FAILED {line}" for line in report["failures"]]
    return "\n".join(lines)
