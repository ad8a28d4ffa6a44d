"""Table-driven tests for `math_accuracy`, its helpers and its worker pool."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import rewards
from rewards import _pool
from rewards import math as rmath

GSM = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"
SOL = "We simplify and find the value is $\\boxed{\\frac{1}{2}}$, as claimed."

# (completion, gold, expected score)
CASES = [
    # right, in every answer style
    ("The answer is 18.", GSM, 1.0),
    ("#### 18", GSM, 1.0),
    ("So she makes \\boxed{18} dollars.", GSM, 1.0),
    ("She makes 9 * 2 = 18 dollars", GSM, 1.0),
    ("**Answer:** 18", GSM, 1.0),
    ("The answer is $18.00.", GSM, 1.0),
    ("The final answer is $18$.", GSM, 1.0),
    ("Answer: 18 dollars", GSM, 1.0),
    ("The answer is 17.\nWait, recheck: the answer is 18.", GSM, 1.0),
    ("<think>9*2</think><answer>18</answer>", GSM, 1.0),
    ("\\boxed{1,000}", "#### 1000", 1.0),
    ("The answer is 1,000.", "#### 1,000", 1.0),
    ("The answer is 50%.", "50", 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", 1.0),
    ("\\boxed{1/2}", SOL, 1.0),
    ("\\boxed{x = 5}", "5", 1.0),
    ("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
    ("\\boxed{[1, 2)}", "[1,2)", 1.0),
    ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}", 1.0),
    ("The final answer is $6+9i$.", "6+9i", 1.0),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1.0),
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", 1.0),
    ("\\boxed{90^\\circ}", "90^\\circ", 1.0),
    ("\\boxed{10}", "10\\text{ cm}", 1.0),
    ("\\boxed{-\\frac{3}{4}}", "-0.75", 1.0),
    ([{"role": "assistant", "content": "The answer is 18."}], GSM, 1.0),
    # wrong
    ("The answer is 17.", GSM, 0.0),
    ("#### 180", GSM, 0.0),
    ("\\boxed{19}", GSM, 0.0),
    ("The answer is 18.\nActually the answer is 20.", GSM, 0.0),
    ("\\boxed{\\frac{2}{1}}", "\\frac{1}{2}", 0.0),
    ("\\boxed{(1, 2]}", "[1,2)", 0.0),
    ("\\boxed{3\\sqrt{2}}", "\\sqrt{8}", 0.0),
    ("\\boxed{0.3333}", "\\frac{1}{3}", 0.0),
    ("\\boxed{6-9i}", "6+9i", 0.0),
    ("\\boxed{Monday}", "\\text{Tuesday}", 0.0),
    ("\\boxed{4\\sqrt{13}}", "3\\sqrt{13}", 0.0),
    ("\\boxed{(-6, 1)}", "(-2,1)", 0.0),
    ("\\boxed{(15,-29)}", "6", 0.0),
    ("The answer is \\boxed{(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
    ("\\boxed{\\sqrt{117}}", "3\\sqrt{13}", 1.0),
    ("\\boxed{-\\frac{\\pi}{3}}", "-\\frac{\\pi}{6}", 0.0),
    # redundant braces inside the box reach the symbolic check unbraced (math-verify reads `{(a,b)}` as a set)
    ("\\boxed{{(3,\\frac{2\\pi}{4})}}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
    ("\\boxed{{(-2,1)}}", "(-2,1)", 1.0),
    # malformed
    ("", GSM, 0.0),
    ("I do not know.", GSM, 0.0),
    ("\\boxed{", GSM, 0.0),
    ("αβγ 😀 漢字", GSM, 0.0),
    (None, GSM, 0.0),
    (12345, GSM, 0.0),
    ([{"role": "assistant"}], GSM, 0.0),
    ("The answer is 18.", "", None),
    ("The answer is 18.", None, None),
    ("The answer is 18.", "#### ", None),
]


@pytest.mark.parametrize("completion,gold,expected", CASES)
def test_math_accuracy_table(completion, gold, expected):
    assert rewards.math_accuracy(["q"], [completion], [gold]) == [expected]
    assert rmath.score_math(completion, gold) == (0.0 if expected is None else expected)  # no gold: no credit


@pytest.mark.parametrize(
    "text,answer",
    [
        ("so \\boxed{\\frac{1}{2}} and \\boxed{3}", "3"),
        ("nested \\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}"),
        ("steps\n#### 1,234", "1,234"),
        ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("The answer is 18 apples in total.", "18"),
        ("It costs 3.5 dollars, then 7", "7"),
        ("\\boxed{{(-2,1)}}", "(-2,1)"),
        ("\\boxed{5} then \\boxed{{}}", "5"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("nothing here", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_answer(text, answer):
    assert rmath.extract_answer(text) == answer


@pytest.mark.parametrize(
    "completion,gold",
    [
        ("\\boxed{{(-2,1)}}", "(-2,1)"),
        ("The answer is $\\boxed{{\\text{Evelyn}}}$.", "\\text{Evelyn}"),
        ("\\boxed{{(6,31,-1)}}", "(6,31,-1)"),
        ("\\boxed{{\\frac{1}{2}}}", "We find $\\boxed{\\frac{1}{2}}$."),
        ("\\boxed{{(1,3)}}", "(-2,1)"),
        ("**Answer:** 1,234", "#### 1234"),
        ("The answer is 50\\%.", "0.5"),
        ("\\boxed{x = 5}", "5"),
    ],
)
def test_fast_path_verdict_matches_math_verify_on_the_same_answers(completion, gold):
    # The fast path is a shortcut: where it decides, math-verify (default settings) on the very answers the
    # pipeline extracted, handed over as the slow path hands them, must give the same verdict.
    from math_verify import parse, verify

    def as_slow_path_hands_it(answer):
        return parse("\\boxed{" + answer + "}") or parse(answer)

    gold_parsed, pred = rmath.parse_gold(gold), rmath.extract_answer(completion)
    fast = rmath.fast_verdict(gold_parsed, pred)
    assert fast is not None
    assert fast == verify(as_slow_path_hands_it(gold_parsed.answer), as_slow_path_hands_it(pred))


def test_gold_parsed_once_per_distinct_string():
    rmath.parse_gold.cache_clear()
    rewards.math_accuracy(None, ["#### 18"] * 8 + ["#### 3"] * 8, [GSM] * 8 + ["#### 3"] * 8)
    info = rmath.parse_gold.cache_info()
    assert info.misses == 2 and info.hits == 14


def test_counts_unparsed_and_reports_metric():
    rewards.reset_parse_failures()
    logged = {}
    scores = rewards.math_accuracy(None, ["no answer", "#### 18"], [GSM, GSM], log_metric=logged.__setitem__,
                                   trainer_state=object(), completion_ids=[[1], [2]], log_extra=lambda *a: None)
    assert scores == [0.0, 1.0]
    assert rewards.parse_failures()["math_accuracy"] == 1
    assert logged["rewards/math_accuracy/unparsed_frac"] == 0.5


def test_in_process_fallback_matches_pool():
    in_process = rmath.get_math_accuracy_reward(use_pool=False)
    assert in_process.score("\\boxed{2\\sqrt{2}}", "\\sqrt{8}") == 1.0
    assert in_process._holder[0] is None  # no worker was started
    assert rmath.score_math("\\boxed{2\\sqrt{2}}", "\\sqrt{8}") == 1.0


STUB_WORKER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, os.environ["REPO"])
    from rewards import _mathjudge as m
    out = os.dup(1)
    m.write_message(out, ("ready", os.getpid()))
    while True:
        task = m.read_message(0)
        if task is None:
            break
        index, gold, pred, _ = task
        if pred == "hang":
            while True:  # uninterruptible by math-verify's soft timeout
                pass
        m.write_message(out, (index, gold == pred))
    """
)


def test_pool_hard_timeout_kills_only_the_stuck_item(tmp_path, monkeypatch):
    script = tmp_path / "stub.py"
    script.write_text(STUB_WORKER)
    monkeypatch.setenv("REPO", str(Path(rmath.__file__).resolve().parents[1]))
    monkeypatch.setattr(_pool, "_WORKER_CMD", f"exec(open({str(script)!r}).read())")
    pool = _pool.MathPool(workers=2, timeout=1.0)
    try:
        start = time.monotonic()
        verdicts, timeouts = pool.judge_many([("a", "a"), ("b", "hang"), ("c", "c"), ("d", "x")])
        elapsed = time.monotonic() - start
        assert verdicts == [True, False, True, False] and timeouts == 1
        assert elapsed < 1.0 + 10  # timeout plus a generous margin for worker start on a busy machine
        stuck = pool.pids()
        assert len(stuck) <= 2
    finally:
        pool.close()
    assert pool.pids() == []


LEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    import rewards
    reward = rewards.get_math_accuracy_reward(workers=2)
    reward(None, ["\\\\boxed{{\\\\sqrt{{8}}}}"], ["2\\\\sqrt{{2}}"])
    print(" ".join(map(str, reward.pool().pids())), flush=True)
    if sys.argv[1] == "error":
        raise RuntimeError("training crashed")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["normal", "error"])
def test_no_worker_leaks_on_exit(tmp_path, ending):
    script = tmp_path / "leak.py"
    script.write_text(LEAK_SCRIPT.format(repo=str(Path(rmath.__file__).resolve().parents[1])))
    result = subprocess.run([sys.executable, str(script), ending], capture_output=True, text=True, timeout=120)
    pids = [int(p) for p in result.stdout.split()]
    assert len(pids) == 2
    # The reward's exit handler kills and reaps its workers before the interpreter ends: no process, no zombie.
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []


def test_pool_survives_forked_child_owner_check():
    pool = rmath.get_math_accuracy_reward(workers=1).pool()
    assert pool.owner_pid == os.getpid()
