"""Benchmark `rewards.math_accuracy` against TRL's `accuracy_reward` on GRPO-shaped work built from real data.

Completions are made from each gold by correct rewrites (different answer styles and equivalent forms),
corrupted rewrites (wrong numbers, swapped fractions, another problem's answer) and malformed outputs
(truncated, empty, garbage, unclosed `\\boxed{`), G per question, scored in GRPO batches.

Three judges score the same (gold, completion) pairs:
  * project   `rewards.math_accuracy` (fast path in-process, hard cases in its process pool);
  * trl       `trl.rewards.accuracy_reward` (reads only `\\boxed{}` / "final answer is $...$");
  * reference math-verify's own `parse` + `verify` with its default settings, one pair at a time.
Every completion also carries the label it was built with (right / wrong), which settles disagreements.

The reference also extracts the answer from the completion itself, so its agreement figure mixes two things:
answer extraction and judging. A fourth pass isolates what the speed-ups (exact/numeric fast path, gold parsed
once, verdict cache, worker pool) could break: math-verify with its default settings, one pair at a time in
this process, on the answers the project's pipeline extracted (gold and completion), each handed over exactly
as the slow path hands it (wrapped in `\\boxed{}`, the bare answer as fallback), against the project's verdict.

Usage: `python bench/rewards.py [--gsm8k-questions 1000] [--math-questions 500] [--group 8]`; `--quick`: 4 questions
of each, 4 completions a question (checks the path in seconds, measures nothing). The ratios are printed last.
"""

import argparse
import json
import logging
import os
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

BATCH_QUESTIONS = 16  # GRPO batch: 16 prompts x G completions per reward call


# ------------------------------------------------------------------------------------------------------------
# Completions from golds
# ------------------------------------------------------------------------------------------------------------


def _garbage(rng: random.Random) -> str:
    alphabet = "αβγ∑∫√≠≤≥😀漢字{}\\$#^_ \n" + "abcdefghijklmnopqrstuvwxyz"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(5, 80)))


def _wrong_number(value: str, rng: random.Random) -> str:
    number = int(value.replace(",", "")) if re.fullmatch(r"-?\d[\d,]*", value) else None
    if number is None:
        return value + "1"
    return str(rng.choice([number + 1, number - 1, number * 2, number + 10, max(0, number // 10), number * 3 + 2]))


def _with_commas(value: str) -> str:
    return f"{int(value):,}" if value.lstrip("-").isdigit() else value


def gsm8k_completions(answer: str, rng: random.Random, group: int) -> list[tuple[str, str, bool]]:
    """G completions `(style, text, is_right)` for one GSM8K answer (`reasoning #### N`)."""
    reasoning, gold = answer.split("####")
    reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip()
    gold = gold.strip().replace(",", "")
    right = {
        "cue": lambda n: f"{reasoning}\nThe answer is {n}.",
        "hashes": lambda n: f"{reasoning}\n#### {n}",
        "boxed": lambda n: f"{reasoning}\nSo the answer is $\\boxed{{{n}}}$.",
        "last_number": lambda n: f"{reasoning}\nSo the result is {n}",
        "bold_commas": lambda n: f"{reasoning}\n**Answer:** {_with_commas(n)}",
        "dollars": lambda n: f"{reasoning}\nThe answer is ${n}.00.",
        "final_latex": lambda n: f"{reasoning}\nThe final answer is ${n}$.",
        "self_corrected": lambda n: (f"The answer is {_wrong_number(n, rng)}.\nWait, let me recheck.\n"
                                     f"{reasoning}\nThe answer is {n}."),
    }
    out = []
    for _ in range(group):
        roll = rng.random()
        style = rng.choice(sorted(right))
        if roll < 0.5:
            out.append((style, right[style](gold), True))
        elif roll < 0.85:
            out.append((style, right[style](_wrong_number(gold, rng)), False))
        else:
            out.append(_malformed(reasoning, gold, rng))
    return out


def _malformed(reasoning: str, gold: str, rng: random.Random) -> tuple[str, str, bool]:
    kind = rng.choice(["truncated", "empty", "garbage", "unclosed_box", "no_answer"])
    if kind == "truncated":
        return kind, reasoning[: rng.randint(0, max(1, len(reasoning) // 2))], False
    if kind == "empty":
        return kind, "", False
    if kind == "garbage":
        return kind, _garbage(rng), False
    if kind == "unclosed_box":
        return kind, f"{reasoning}\nThe answer is \\boxed{{{gold}", True
    return kind, "I am not sure how to solve this problem.", False


_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")


def _equivalent(answer: str, rng: random.Random) -> str:
    """A different spelling of the same answer."""
    frac = _FRAC.match(answer)
    if frac:
        sign, num, den = frac.groups()
        value = int(num) / int(den)
        if (den.lstrip("0") and all(p in (2, 5) for p in _prime_factors(int(den)))) and rng.random() < 0.5:
            return f"{sign}{value:g}"
        return f"{sign}\\dfrac{{{num}}}{{{den}}}"
    if answer.lstrip("-").isdigit():
        return rng.choice([f"{answer}.0", f"{_with_commas(answer)}", f"x = {answer}"])
    return answer.replace(" ", "").replace("\\left", "").replace("\\right", "") if " " in answer else f"{{{answer}}}"


def _prime_factors(n: int) -> set[int]:
    out, p = set(), 2
    while n > 1 and p * p <= n:
        while n % p == 0:
            out.add(p)
            n //= p
        p += 1
    return out | ({n} if n > 1 else set())


def _corrupted(answer: str, others: list[str], rng: random.Random) -> str:
    """A wrong answer of the same kind."""
    frac = _FRAC.match(answer)
    if frac and frac.group(2) != frac.group(3):
        sign, num, den = frac.groups()
        return f"{sign}\\frac{{{den}}}{{{num}}}"
    digits = [i for i, ch in enumerate(answer) if ch.isdigit()]
    if digits and rng.random() < 0.7:
        i = rng.choice(digits)
        return answer[:i] + str((int(answer[i]) + rng.randint(1, 8)) % 10) + answer[i + 1 :]
    other = rng.choice(others)
    return other if other != answer else answer + "+1"


def _unboxed(solution: str) -> str:
    """The reference solution with its `\\boxed{X}` written as plain `X`: natural reasoning text."""
    start = solution.rfind("\\boxed{")
    if start < 0:
        return solution
    depth, i = 0, start + len("\\boxed")
    for i in range(start + len("\\boxed"), len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[i], 0)
        if depth == 0:
            break
    return solution[:start] + solution[start + len("\\boxed{") : i] + solution[i + 1 :]


def math_completions(row: dict, others: list[str], rng: random.Random, group: int) -> list[tuple[str, str, bool]]:
    """G completions `(style, text, is_right)` for one MATH problem."""
    answer = row["answer"]
    lead = _unboxed(row["solution"])
    styles = {
        "boxed": lambda a: f"{lead}\nTherefore the answer is $\\boxed{{{a}}}$.",
        "final_latex": lambda a: f"{lead}\nThe final answer is ${a}$.",
        "boxed_bare": lambda a: f"\\boxed{{{a}}}",
    }
    out = []
    for _ in range(group):
        roll = rng.random()
        style = rng.choice(sorted(styles))
        if roll < 0.3:
            out.append((style, styles[style](answer), True))
        elif roll < 0.5:
            out.append((style + "+equivalent", styles[style](_equivalent(answer, rng)), True))
        elif roll < 0.85:
            out.append((style + "+wrong", styles[style](_corrupted(answer, others, rng)), False))
        else:
            out.append(_malformed(lead, answer, rng))
    return out


# ------------------------------------------------------------------------------------------------------------
# Judges
# ------------------------------------------------------------------------------------------------------------


def _clear_math_verify_caches() -> None:
    # math-verify memoises parses; clear them so no judge profits from another's work.
    from math_verify import parser

    for name in ("parse_latex_cached", "parse_expr_cached"):
        fn = getattr(parser, name, None)
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()


def run_batched(fn, golds: list[str], completions: list[str], group: int) -> tuple[list, float]:
    """Call a TRL-style reward on GRPO batches; return all scores and the seconds spent."""
    conv = [[{"role": "assistant", "content": c}] for c in completions]
    step = BATCH_QUESTIONS * group
    scores = []
    start = time.perf_counter()
    for i in range(0, len(conv), step):
        prompts = [[{"role": "user", "content": "q"}]] * len(conv[i : i + step])
        scores += fn(prompts=prompts, completions=conv[i : i + step], gold=golds[i : i + step],
                     solution=golds[i : i + step])
    return scores, time.perf_counter() - start


def reference_gold(gold: str) -> str:
    """How one hands a gold to math-verify directly: raw text, bare LaTeX answers inside `$...$`."""
    return gold if ("####" in gold or "\\boxed" in gold) else f"${gold}$"


def _parse_like_slow_path(answer: str):
    """Hand an extracted answer to math-verify the way `rewards._mathjudge` does, but with default settings."""
    from math_verify import parse

    return parse("\\boxed{" + answer + "}") or parse(answer)


def extracted_pair(gold: str, completion: str) -> tuple[str | None, str | None]:
    """The (gold answer, predicted answer) the project's pipeline extracts, without its gold cache."""
    from rewards import math as rmath

    parsed = rmath.parse_gold.__wrapped__(gold)
    return (parsed.answer if parsed else None), rmath.extract_answer(completion)


def run_soundness(golds: list[str], completions: list[str]) -> tuple[list, list, float]:
    """math-verify (default settings, one pair at a time, no pool or cache) on the project's extracted answers.

    Returns the verdicts (`None` where the gold has no answer, `0.0` where the completion has none, as the
    project scores them), the extracted pairs and the seconds spent.
    """
    from math_verify import verify

    scores, pairs = [], []
    start = time.perf_counter()
    for gold, completion in zip(golds, completions):
        gold_answer, pred = extracted_pair(gold, completion)
        pairs.append((gold_answer, pred))
        if gold_answer is None or pred is None:
            scores.append(None if gold_answer is None else 0.0)
            continue
        try:
            scores.append(float(verify(_parse_like_slow_path(gold_answer), _parse_like_slow_path(pred))))
        except Exception:  # noqa: BLE001
            scores.append(0.0)
    return scores, pairs, time.perf_counter() - start


def run_reference(golds: list[str], completions: list[str]) -> tuple[list, float]:
    from math_verify import parse, verify

    scores = []
    start = time.perf_counter()
    for gold, completion in zip(golds, completions):
        try:
            scores.append(float(verify(parse(reference_gold(gold)), parse(completion))))
        except Exception:  # noqa: BLE001
            scores.append(0.0)
    return scores, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------


def _as_bool(score) -> bool:
    return bool(score) and score == score  # None and NaN count as "not right"


def report(title: str, golds, items, ours, trl, ref, sound, pairs, times, out_dir: Path | None) -> dict:
    n = len(items)
    agree_ref = sum(_as_bool(a) == _as_bool(b) for a, b in zip(ours, ref))
    agree_sound = sum(_as_bool(a) == _as_bool(b) for a, b in zip(ours, sound))
    print(f"\n== {title}: {n} completions ({len(set(golds))} golds) ==")
    for name, seconds in times.items():
        print(f"  {name:<10} {seconds:8.2f} s   {n / seconds:9.0f} completions/s")
    for name, scores in (("project", ours), ("trl", trl), ("reference", ref)):
        right = sum(_as_bool(s) == label for s, (_, _, label) in zip(scores, items))
        print(f"  {name:<10} agrees with the construction label on {right}/{n} ({100 * right / n:.2f} %)")
    print(f"  project vs math-verify direct: {agree_ref}/{n} same verdicts ({100 * agree_ref / n:.2f} %)")
    _list_disagreements("project vs math-verify direct", golds, items, ours, ref, "ref", out_dir, title)
    _list_disagreements("project vs TRL", golds, items, ours, trl, "trl", out_dir, title)
    with_answer = sum(p is not None for _, p in pairs)
    print(f"  fast-path soundness: {agree_sound}/{n} ({100 * agree_sound / n:.2f} %) same verdict as math-verify "
          f"on the extracted answers ({with_answer} completions with an extracted answer)")
    _list_soundness_disagreements(items, pairs, ours, sound, out_dir, title)
    # Percentages computed as printed above, so the summary lines round the same way.
    return {"agree_ref": 100 * agree_ref / n, "soundness": 100 * agree_sound / n}


def _list_soundness_disagreements(items, pairs, ours, sound, out_dir, title) -> None:
    """Print every pair where the project and math-verify disagree on the same extracted answers.

    For each, also says what the project's own slow path (`rewards._mathjudge.judge`, in-process, uncached)
    returns, so a disagreement can be told apart: fast path/caches/pool (slow path agrees with math-verify)
    versus the slow path's extraction settings (slow path agrees with the project).
    """
    from rewards import _mathjudge

    cases = []
    for (style, _, label), (gold_answer, pred), a, b in zip(items, pairs, ours, sound):
        if _as_bool(a) != _as_bool(b):
            slow = _mathjudge.judge(gold_answer, pred, timeout=5)
            cases.append({"style": style, "gold_answer": gold_answer, "pred": pred, "label": label,
                          "project": a, "math_verify": b, "slow_path": float(slow)})
    print(f"  fast-path soundness: {len(cases)} disagreements")
    for case in cases:
        right = "project" if _as_bool(case["project"]) == case["label"] else "math-verify"
        print(f"    {case['style']:<24} gold={case['gold_answer']!r} pred={case['pred']!r} "
              f"project={case['project']} math-verify={case['math_verify']} slow-path={case['slow_path']} "
              f"label={case['label']} (right: {right})")
    if out_dir is not None and cases:
        path = out_dir / f"disagreements_{title.split()[0].lower()}_soundness.jsonl"
        path.write_text("".join(json.dumps(case) + "\n" for case in cases))
        print(f"    (all cases written to {path.name})")


def _list_disagreements(header, golds, items, ours, other, other_name, out_dir, title) -> None:
    """Print every disagreement grouped by completion style, saying which side the label supports."""
    groups = defaultdict(list)
    for gold, (style, text, label), a, b in zip(golds, items, ours, other):
        if _as_bool(a) != _as_bool(b):
            winner = "project" if _as_bool(a) == label else other_name
            groups[(style, winner)].append((gold, text, label, a, b))
    total = sum(len(v) for v in groups.values())
    print(f"  {header}: {total} disagreements")
    for (style, winner), cases in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        gold, text, label, a, b = cases[0]
        tail = text[-90:].replace("\n", " | ")
        gold_tail = gold.split("####")[-1].strip()[-40:]
        print(f"    {len(cases):5d} x {style:<28} right: {winner:<8} e.g. gold={gold_tail!r} "
              f"project={a} {other_name}={b} ...{tail!r}")
    if out_dir is not None and total:
        path = out_dir / f"disagreements_{title.split()[0].lower()}_{other_name}.jsonl"
        with path.open("w") as fh:
            for (style, winner), cases in groups.items():
                for gold, text, label, a, b in cases:
                    fh.write(json.dumps({"style": style, "right": winner, "gold": gold, "completion": text,
                                         "label": label, "project": a, other_name: b}) + "\n")
        print(f"    (all cases written to {path.name})")


def bench(title: str, golds: list[str], items: list, group: int, out_dir: Path | None) -> dict:
    from trl.rewards import accuracy_reward

    import rewards

    completions = [text for _, text, _ in items]
    _clear_math_verify_caches()
    trl_scores, trl_s = run_batched(accuracy_reward, golds, completions, group)
    rewards.math.parse_gold.cache_clear()
    ours, ours_s = run_batched(rewards.math_accuracy, golds, completions, group)
    _clear_math_verify_caches()
    ref, ref_s = run_reference(golds, completions)
    _clear_math_verify_caches()
    sound, pairs, sound_s = run_soundness(golds, completions)
    times = {"project": ours_s, "trl": trl_s, "reference": ref_s, "soundness": sound_s}
    result = report(title, golds, items, ours, trl_scores, ref, sound, pairs, times, out_dir)
    result["ratio"] = trl_s / ours_s
    return result


# ------------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def gsm8k_work(n: int, group: int, rng: random.Random):
    rows = _read_jsonl(DATA / "gsm8k" / "test.jsonl")[:n]
    golds, items = [], []
    for row in rows:
        for item in gsm8k_completions(row["answer"], rng, group):
            golds.append(row["answer"])
            items.append(item)
    return golds, items


def math_work(n: int, group: int, rng: random.Random):
    rows = _read_jsonl(DATA / "math" / "test.jsonl")[:n]
    answers = [r["answer"] for r in rows]
    golds, items = [], []
    for i, row in enumerate(rows):
        # Half the rows give the bare answer as gold, half the whole solution with its \boxed{}.
        gold = row["answer"] if i % 2 == 0 else row["solution"]
        for item in math_completions(row, answers, rng, group):
            golds.append(gold)
            items.append(item)
    return golds, items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k-questions", type=int, default=1000)
    parser.add_argument("--math-questions", type=int, default=500)
    parser.add_argument("--group", type=int, default=8, help="completions per question (GRPO's G)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for the full disagreement lists")
    parser.add_argument("--quick", action="store_true", help="4 questions of each, 4 completions a question")
    args = parser.parse_args()
    if args.quick:
        args.gsm8k_questions, args.math_questions, args.group = 4, 4, 4
    logging.disable(logging.WARNING)
    if not (DATA / "gsm8k").is_dir() or not (DATA / "math").is_dir():
        print(f"skipped: real data not found under {DATA} (need gsm8k/ and math/)")
        return
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)

    import rewards

    reward = rewards.math_accuracy
    print(f"machine: {os.cpu_count()} CPUs; project pool: {reward.workers} workers, timeout {reward.timeout} s")
    start = time.perf_counter()
    rewards.math_accuracy(None, ["\\boxed{\\frac{1}{x}}"], ["\\frac{2}{2x}"])  # start the pool outside timing
    print(f"pool start (once per process, not timed below): {time.perf_counter() - start:.2f} s")

    rng = random.Random(args.seed)
    gsm = bench("GSM8K-shaped", *gsm8k_work(args.gsm8k_questions, args.group, rng), args.group, args.out)
    mth = bench("MATH-shaped", *math_work(args.math_questions, args.group, rng), args.group, args.out)
    print(f"\nparse-failure counters: {rewards.parse_failures()}")
    print("\n== agreement (same verdicts; target >= 99.9 %) ==")
    for name, result in (("GSM8K-shaped", gsm), ("MATH-shaped ", mth)):
        print(f"{name} with math-verify direct (its own extraction): {result['agree_ref']:.2f} %; "
              f"fast-path soundness: {result['soundness']:.2f} % same verdict as math-verify "
              f"on the extracted answers")
    print("\n== ratios (TRL accuracy_reward seconds / project seconds, same inputs, same run) ==")
    print(f"GSM8K-shaped throughput ratio: {gsm['ratio']:.1f}x (target >= 5x)")
    print(f"MATH-shaped  throughput ratio: {mth['ratio']:.1f}x (target >= 2x)")


if __name__ == "__main__":
    main()
