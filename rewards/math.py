"""`math_accuracy`: is the final answer of a completion equal to the gold answer?

Built for GRPO's shape of work, where the G completions of a group share one gold:

1. the gold is read once per distinct string (`lru_cache`), whatever its form: GSM8K's `... #### 18`, a MATH
   answer (`\\frac{1}{2}`) or a whole MATH solution with `\\boxed{}`;
2. the completion's final answer is extracted by cheap regexes (`\\boxed{}`, `####`, "The answer is ...",
   otherwise the last number);
3. a fast path settles plain numbers and textually identical answers in-process, in microseconds;
4. only what is left (LaTeX that needs sympy) goes to math-verify in a process pool that gives both parallelism
   and a hard per-item timeout, so a pathological expression costs at most the timeout and scores 0.

Evaluation calls `score_math(completion, gold)` for one item; training calls `math_accuracy(...)` for a batch.
Both run the same code, so training and evaluation cannot drift apart.
"""

import functools
import os
import re
import weakref
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from . import _mathjudge, _numeric, _pool
from ._common import as_text, batch_size, column, completion_text, report
from .metrics import count_failure

NAME = "math_accuracy"

# ------------------------------------------------------------------------------------------------------------
# Answer extraction
# ------------------------------------------------------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"####\s*([^\n]*)")
_CUE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is\b|:|=)\s*[:=]?\s*", re.IGNORECASE
)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
_MATHY = re.compile(r"[\\^_{}=<>()\[\]]|\d\s*/\s*\d")
_WORD = re.compile(r"(?<!\\)\b[A-Za-z]{2,}")


def _braced(text: str, start: int) -> str | None:
    """Return the text inside the braces opening at `text[start - 1]`, or `None` if they never close."""
    depth = 1
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def _unbraced(answer: str) -> str:
    """Drop redundant outer grouping braces (`{(-2,1)}` -> `(-2,1)`); escaped set braces `\\{...\\}` stay."""
    answer = answer.strip()
    while answer.startswith("{") and answer.endswith("}") and _braced(answer, 1) == answer[1:-1]:
        answer = answer[1:-1].strip()
    return answer


def _last_boxed_at(text: str) -> tuple[int, str] | None:
    for match in reversed(list(_BOXED.finditer(text))):
        inner = _braced(text, match.end())
        # Unbrace here, not only in `normalize_text`: math-verify reads `{(-2,1)}` as a set, so the slow path
        # must get the same `(-2,1)` the fast path compares, or the two paths could disagree.
        answer = _unbraced(inner) if inner is not None else ""
        if answer:
            return match.start(), answer
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` (or `\\fbox{...}`) in `text`."""
    found = _last_boxed_at(text)
    return found[1] if found else None


def _strip_wrappers(answer: str) -> str:
    """Drop the decoration around an answer: `$...$`, `\\(...\\)`, `**...**`, trailing period."""
    answer = answer.strip()
    for _ in range(3):
        before = answer
        answer = answer.strip().strip("*").strip()
        for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("`", "`")):
            if answer.startswith(left) and answer.endswith(right) and len(answer) > len(left) + len(right) - 1:
                answer = answer[len(left) : len(answer) - len(right)].strip()
        answer = answer.rstrip(".").strip()
        if _BOXED.match(answer) and _braced(answer, _BOXED.match(answer).end()) is None:
            answer = answer[_BOXED.match(answer).end() :]  # cut off inside its box: keep what was written
        answer = _unbraced(answer)  # redundant outer braces: {11\sqrt2}
        if answer == before:
            break
    return answer


def _after_cue(text: str) -> tuple[int, str] | None:
    """The answer stated after the last "The answer is" / "Answer:" cue, cut at the end of its sentence."""
    matches = list(_CUE.finditer(text))
    for match in reversed(matches):
        rest = text[match.end() : match.end() + 300]
        end = _SENTENCE_END.search(rest)
        candidate = _strip_wrappers(rest[: end.start()] if end else rest)
        answer = _number_if_prose(candidate) if candidate else None
        if answer:
            return match.start(), answer
    return None


def _after_hashes(text: str) -> tuple[int, str] | None:
    matches = list(_HASHES.finditer(text))
    if not matches:
        return None
    answer = _strip_wrappers(matches[-1].group(1))
    answer = _number_if_prose(answer) if answer else None
    return (matches[-1].start(), answer) if answer else None


def _number_if_prose(candidate: str) -> str | None:
    """Keep a mathematical answer whole; from prose ("18 apples in total") keep the first number."""
    if _MATHY.search(candidate) or not _WORD.search(candidate):
        return candidate
    numbers = _NUMBER.findall(candidate)
    if numbers:
        return numbers[0]
    # A short word answer ("Monday", "(C)") stays; a long sentence without numbers is not an answer.
    return candidate if len(candidate.split()) <= 3 else None


def extract_answer(text: Any) -> str | None:
    """Return the final answer stated in a completion, or `None` when it states none.

    Looks at an `<answer>...</answer>` span first (then searched the same way); otherwise takes whichever
    explicit statement comes last (`\\boxed{}`, a `#### ...` line, a "The answer is ..." / "Answer: ..." cue),
    and failing those the last number.

    Args:
        text (`str`):
            The completion text (other types give `None`).
    """
    if not isinstance(text, str) or not text.strip():
        return None
    tagged = _ANSWER_TAG.findall(text)
    if tagged and tagged[-1].strip():
        inner = extract_answer(tagged[-1].replace("<answer>", ""))
        if inner is not None:
            return inner
    # Of the explicit statements (boxed, ####, "the answer is"), the one written last is the final word.
    stated = [found for found in (_last_boxed_at(text), _after_hashes(text), _after_cue(text)) if found]
    if stated:
        return max(stated)[1]
    numbers = _NUMBER.findall(text)
    return numbers[-1].rstrip(",") if numbers else None


# ------------------------------------------------------------------------------------------------------------
# Normalisation and the fast path
# ------------------------------------------------------------------------------------------------------------

_LATEX_NOISE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\quad|\\displaystyle|\s+|\^\{?\\circ\}?|\\%|%")
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d*)(?:\.\d+)?")


def normalize_text(answer: str) -> str:
    """Canonical spelling of an answer for exact comparison (spacing, `\\left`, `\\dfrac`, `\\text{}` ...)."""
    answer = _strip_wrappers(answer)
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\$", "")
    answer = _TEXT_WRAP.sub(r"\1", answer)
    answer = _LATEX_NOISE.sub("", answer)
    answer = answer.replace("{,}", ",").replace("$", "")
    return answer.rstrip(".").lower()


_LATEX_FRAC = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}")
_ASSIGNED = re.compile(r"^[a-zA-Z]\s*=\s*")


def to_number(answer: str) -> tuple[Fraction, bool] | None:
    """Read a plain number (`1,234.5`, `-3`, `\\$18`, `50\\%`, `.5`, `3/4`, `\\frac{3}{4}`, `x = 5`) as
    `(value, is_percent)`."""
    text = _ASSIGNED.sub("", _strip_wrappers(answer))
    frac = _LATEX_FRAC.fullmatch(text.replace(" ", ""))
    if frac:
        sign, num, den = frac.groups()
        return (Fraction(int(num), int(den)) * (-1 if sign else 1), False) if int(den) else None
    text = text.replace("\\$", "").replace("$", "").replace("\\!", "").replace("{,}", ",")
    text = text.replace(" ", "")
    percent = text.endswith("%")
    text = text.rstrip("%").rstrip("\\").rstrip(".")
    if "/" in text:
        num, _, den = text.partition("/")
        if _PLAIN_NUMBER.fullmatch(num) and den.isdigit() and int(den) != 0 and any(c.isdigit() for c in num):
            return Fraction(num.replace(",", "")) / int(den), percent
        return None
    if not text or not any(c.isdigit() for c in text) or not _PLAIN_NUMBER.fullmatch(text) or len(text) > 40:
        return None
    return Fraction(text.replace(",", "")), percent


def _candidates(number: tuple[Fraction, bool]) -> set[Fraction]:
    value, percent = number
    # math-verify accepts a percent either as itself or divided by 100; so do we.
    return {value, value / 100} if percent else {value}


def fast_verdict(gold: "Gold", pred: str) -> bool | None:
    """Settle easy pairs without sympy: `True`/`False`, or `None` when math-verify must decide."""
    if gold.norm and normalize_text(pred) == gold.norm:
        return True
    pred_number = to_number(pred)
    if gold.number is None or pred_number is None:
        # Closed-form constants (3\sqrt{13}, \frac{\pi}{6}) with clearly different values need no sympy.
        return False if _numeric.clearly_different(gold.answer, pred) else None
    golds, preds = _candidates(gold.number), _candidates(pred_number)
    if golds & preds:
        return True
    if all(v.denominator == 1 for v in golds | preds):
        return False
    # Decimals that nearly match go to math-verify, whose rounding rules then decide.
    close = any(abs(g - p) <= Fraction(1, 10**4) * max(1, abs(g)) for g in golds for p in preds)
    return None if close else False


# ------------------------------------------------------------------------------------------------------------
# Gold
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gold:
    """A gold answer read once: the answer text, its normal form and its value when it is a plain number."""

    answer: str
    norm: str
    number: tuple[Fraction, bool] | None


@functools.lru_cache(maxsize=16384)
def parse_gold(gold: str) -> Gold | None:
    """Read a gold in any accepted form (GSM8K `#### N`, MATH solution with `\\boxed{}`, bare answer).

    Returns `None` when there is no answer in it.
    """
    if "####" in gold:
        answer = _strip_wrappers(gold.rsplit("####", 1)[1].strip().split("\n")[0])
    elif "\\boxed" in gold or "\\fbox" in gold:
        answer = last_boxed(gold) or ""
    else:
        answer = _strip_wrappers(gold)
    if not answer:
        return None
    return Gold(answer=answer, norm=normalize_text(answer), number=to_number(answer))


# ------------------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------------------


def score_many(completions: list[Any], golds: list[Any], judge_hard=None) -> tuple[list[float | None], int]:
    """Score completion texts against golds; return the scores and how many completions had no answer.

    ``judge_hard`` settles the (gold, answer) pairs the fast path cannot (default: the default reward's pool).
    """
    judge_hard = judge_hard or math_accuracy.judge_hard
    scores: list[float | None] = [None] * len(completions)
    hard_index, hard_pairs = [], []
    unparsed = 0
    for i, (completion, raw_gold) in enumerate(zip(completions, golds)):
        gold_text = as_text(raw_gold)
        gold = parse_gold(gold_text) if gold_text else None
        if gold is None:
            count_failure(f"{NAME}/gold")
            continue  # the reward does not apply to a row without a readable gold
        pred = extract_answer(completion_text(completion))
        if pred is None:
            unparsed += 1
            scores[i] = 0.0
            continue
        verdict = fast_verdict(gold, pred)
        if verdict is None:
            hard_index.append(i)
            hard_pairs.append((gold.answer, pred))
        else:
            scores[i] = float(verdict)
    for i, verdict in zip(hard_index, judge_hard(hard_pairs)):
        scores[i] = float(verdict)
    count_failure(NAME, unparsed)
    return scores, unparsed


def score_math(completion: Any, gold: Any) -> float:
    """Score one completion against one gold: `1.0` if the final answers are equal, else `0.0`.

    Args:
        completion (`str` or conversation):
            The model's output.
        gold (`str`):
            GSM8K answer (`... #### 18`), MATH answer (`\\frac{1}{2}`) or MATH solution with `\\boxed{}`.
    """
    return math_accuracy.score(completion, gold)


# ------------------------------------------------------------------------------------------------------------
# The reward: an object that owns its judge settings and worker pool
# ------------------------------------------------------------------------------------------------------------

_VERDICT_CACHE_SIZE = 100_000


def _default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    # Under torchrun every rank would start its own pool: share the node's cores between local ranks.
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local_ranks))


class MathAccuracy:
    r"""The `math_accuracy` reward with its own settings, verdict cache and pool of math-verify workers.

    Build one with `get_math_accuracy_reward`. The pool starts on the first hard case (LaTeX the fast path cannot
    settle) and stops with `close()`, at the end of a ``with`` block, or when the process exits; a forked child
    starts its own. Unset settings are read from the environment when first needed, not at import.

    Args:
        workers (`int`, *optional*):
            Worker processes for symbolic checks. Defaults to `PAFT_REWARDS_WORKERS`, else the usable cores
            divided by `LOCAL_WORLD_SIZE`.
        timeout (`float`, *optional*):
            Hard limit in seconds for one symbolic check; past it the item scores 0. Defaults to
            `PAFT_REWARDS_TIMEOUT`, else `5`.
        use_pool (`bool`, *optional*):
            `False` judges hard cases in-process (no hard timeout off the main thread). Defaults to `True` unless
            `PAFT_REWARDS_POOL=0`.
    """

    def __init__(self, workers: int | None = None, timeout: float | None = None, use_pool: bool | None = None):
        self.__name__ = NAME  # TRL logs rewards/<__name__>/mean
        self._workers, self._timeout, self._use_pool = workers, timeout, use_pool
        # The pool sits in a holder the finaliser can reach without keeping this object alive.
        self._holder: list[_pool.MathPool | None] = [None]
        self._verdicts: dict[tuple[str, str], bool] = {}
        weakref.finalize(self, _close_holder, self._holder)  # also runs at interpreter exit

    # -- settings ----------------------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        chosen = self._workers or int(os.environ.get("PAFT_REWARDS_WORKERS", "0") or 0) or _default_workers()
        return max(1, int(chosen))

    @property
    def timeout(self) -> float:
        chosen = self._timeout if self._timeout is not None else float(os.environ.get("PAFT_REWARDS_TIMEOUT", "5"))
        return max(0.1, float(chosen))

    @property
    def use_pool(self) -> bool:
        return self._use_pool if self._use_pool is not None else os.environ.get("PAFT_REWARDS_POOL", "1") != "0"

    # -- scoring -----------------------------------------------------------------------------------------

    def __call__(self, prompts: Any, completions: Any, gold: Any = None, **kwargs: Any) -> list[float | None]:
        r"""Reward `1.0` when the completion's final answer equals the gold, `0.0` otherwise.

        Args:
            prompts (`list`):
                Unused; part of TRL's reward signature.
            completions (`list[str]` or `list[list[dict]]`):
                Plain-text or conversational completions.
            gold (`list[str]`):
                The dataset's `gold` column: GSM8K answers with `#### N`, MATH answers or MATH solutions.
            **kwargs:
                Other dataset columns and TRL's extras (`trainer_state`, `log_metric`, ...); `log_metric`
                receives the share of completions without a readable answer.

        Returns:
            `list[float | None]`: one score per completion; `None` where the gold cannot be read.
        """
        n = batch_size(completions)
        if not isinstance(completions, (list, tuple)):
            completions = [completions]
        try:
            scores, unparsed = score_many(list(completions), column(gold, n), self.judge_hard)
        except Exception:  # noqa: BLE001 - never end a training run
            count_failure(f"{NAME}/error")
            return [0.0] * n
        report(kwargs, NAME, scores, unparsed)
        return scores

    def score(self, completion: Any, gold: Any) -> float:
        """Score one completion against one gold (evaluation's entry point)."""
        try:
            score = score_many([completion], [gold], self.judge_hard)[0][0]
        except Exception:  # noqa: BLE001 - evaluation must not crash on one item either
            count_failure(f"{NAME}/error")
            return 0.0
        return 0.0 if score is None else score

    def extract(self, completion: Any, **row: Any) -> str | None:
        """The final answer the reward reads in one completion (`extract_answer`), `None` when it states none."""
        return extract_answer(completion_text(completion))

    def judge_hard(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """Symbolic verdicts for pairs the fast path could not settle (pool with hard timeout, or in-process)."""
        if not pairs:
            return []
        if not self.use_pool:
            return [_mathjudge.judge(g, p, timeout=max(1, int(self.timeout))) for g, p in pairs]
        # A group's completions often agree on their answer: judge each distinct pair once, and remember verdicts.
        todo = list(dict.fromkeys(p for p in pairs if p not in self._verdicts))
        if todo:
            verdicts, timeouts = self.pool().judge_many(todo)
            count_failure(f"{NAME}/timeout", timeouts)
            if len(self._verdicts) > _VERDICT_CACHE_SIZE:
                self._verdicts.clear()
            self._verdicts.update(zip(todo, verdicts))
        return [self._verdicts[p] for p in pairs]

    # -- lifetime ----------------------------------------------------------------------------------------

    def pool(self) -> _pool.MathPool:
        """The worker pool, started now if needed (again after a fork, or when the size changed)."""
        pool = self._holder[0]
        if pool is None or pool.owner_pid != os.getpid() or pool.size != self.workers:
            if pool is not None:
                pool.close()
            self._holder[0] = pool = _pool.MathPool(self.workers, self.timeout)
        pool.timeout = self.timeout
        return pool

    def close(self) -> None:
        """Stop the worker processes (the reward still works; a later hard case starts a new pool)."""
        _close_holder(self._holder)

    def __enter__(self) -> "MathAccuracy":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MathAccuracy(workers={self._workers}, timeout={self._timeout}, use_pool={self._use_pool})"


def _close_holder(holder: list) -> None:
    if holder[0] is not None:
        holder[0].close()
        holder[0] = None


def get_math_accuracy_reward(workers: int | None = None, timeout: float | None = None,
                             use_pool: bool | None = None) -> MathAccuracy:
    """A `math_accuracy` reward with its own settings and worker pool (see `MathAccuracy`).

    ```python
    >>> reward = get_math_accuracy_reward(workers=4, timeout=2.0)
    >>> reward(None, ["The answer is \\boxed{\\frac{1}{2}}"], ["0.5"])
    [1.0]
    >>> reward.close()
    ```
    """
    return MathAccuracy(workers=workers, timeout=timeout, use_pool=use_pool)


# The registered reward: settings from the environment, read when first needed.
math_accuracy = get_math_accuracy_reward()
