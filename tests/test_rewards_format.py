"""Table-driven tests for the format rewards: think/answer layout, answer cue and length penalty."""

import pytest

import rewards
from rewards.format import LengthPenalty

# (completion, expected think_answer_format)
THINK_CASES = [
    ("<think>reason</think><answer>42</answer>", 1.0),
    ("<think>reason</think>\n<answer>42</answer>", 1.0),
    ("  <think>a\nb</think>  <answer>x</answer>  \n", 1.0),
    ("<think>multi\nline\nreasoning</think><answer>\\boxed{3}</answer>", 1.0),
    ("<think> 🤔 </think><answer>漢字</answer>", 1.0),
    ("<think>1 < 2</think><answer>yes</answer>", 1.0),
    ("<think>r</think><answer>B</answer>", 1.0),
    ("<think>r</think>\n\n<answer>\nB\n</answer>\n", 1.0),
    ([{"role": "assistant", "content": "<think>r</think><answer>B</answer>"}], 1.0),
    ({"role": "assistant", "content": "<think>r</think><answer>B</answer>"}, 1.0),
    ([{"role": "assistant", "content": [{"type": "text", "text": "<think>r</think><answer>B</answer>"}]}], 1.0),
    ("<think>r</think><answer>42</answer> extra", 0.0),
    ("preface <think>r</think><answer>42</answer>", 0.0),
    ("<answer>42</answer><think>r</think>", 0.0),
    ("<think>r</think>", 0.0),
    ("<answer>42</answer>", 0.0),
    ("<think></think><answer>42</answer>", 0.0),
    ("<think>r</think><answer>  </answer>", 0.0),
    ("<think>r<answer>42</answer>", 0.0),
    ("<think>r</think><answer>42", 0.0),
    ("<think>a</think><think>b</think><answer>42</answer>", 0.0),
    ("<think>a</think><answer>1</answer><answer>2</answer>", 0.0),
    ("<think>a <answer>x</answer> b</think><answer>42</answer>", 0.0),
    ("<THINK>r</THINK><ANSWER>42</ANSWER>", 0.0),
    ("<think>r</think> <answer>42</answer></answer>", 0.0),
    ("42", 0.0),
    ("", 0.0),
    (None, 0.0),
    (42, 0.0),
    ([], 0.0),
    ([{"role": "assistant"}], 0.0),
    ("<" * 10_000, 0.0),
    ("<think>" * 1000, 0.0),
    ("<think>x</think>" * 1000 + "<answer>1</answer>", 0.0),
    ("think: r answer: 42", 0.0),
    ("<think>r</think><answer>42</answer>\x00", 0.0),
    ("<think>r</thinking><answer>42</answer>", 0.0),
    ("<thinking>r</thinking><answer>42</answer>", 0.0),
    ("<think>r</think><answers>42</answers>", 0.0),
    ("</think><answer>42</answer>", 0.0),
]


@pytest.mark.parametrize("completion,expected", THINK_CASES)
def test_think_answer_format_table(completion, expected):
    assert rewards.think_answer_format(["p"], [completion], ["gold"]) == [expected]


# (completion, expected answer_cue)
CUE_CASES = [
    ("The answer is 42.", 1.0),
    ("the answer is B", 1.0),
    ("The final answer is $x$", 1.0),
    ("Final answer: 7", 1.0),
    ("Answer: Paris", 1.0),
    ("answer:B", 1.0),
    ("ANSWER: C", 1.0),
    ("So \\boxed{3}.", 1.0),
    ("\\boxed {x}", 1.0),
    ("#### 18", 1.0),
    ("steps\n####18", 1.0),
    ("<answer>3</answer>", 1.0),
    ("<think>r</think><answer>B</answer>", 1.0),
    ("**Answer:** 12", 1.0),
    ("My answer is 5", 1.0),
    ("Reasoning...\nThe answer is: 9", 1.0),
    ([{"role": "assistant", "content": "Answer: 3"}], 1.0),
    ("αβγ the answer is 漢", 1.0),
    ("x" * 50_000 + " answer: 1", 1.0),
    ("The answer is\n42", 1.0),
    ("42", 0.0),
    ("I think it is 42.", 0.0),
    ("", 0.0),
    ("   ", 0.0),
    (None, 0.0),
    (3.14, 0.0),
    ([], 0.0),
    ("<answer></answer>", 0.0),
    ("<answer>   </answer>", 0.0),
    ("The answer is", 0.0),
    ("Answer:", 0.0),
    ("answers are many", 0.0),
    ("answered", 0.0),
    ("boxed 3", 0.0),
    ("\\box{3}", 0.0),
    ("### 18", 0.0),
    ("# 18", 0.0),
    ("unanswerable question", 0.0),
    ("x" * 50_000, 0.0),
    ("😀" * 100, 0.0),
]


@pytest.mark.parametrize("completion,expected", CUE_CASES)
def test_answer_cue_table(completion, expected):
    assert rewards.answer_cue(["p"], [completion]) == [expected]


# (budget, limit, length, expected penalty)
LENGTH_CASES = [(512, 1024, n, 0.0) for n in (0, 1, 10, 100, 256, 511, 512)] + [
    (512, 1024, 513, -1 / 512),
    (512, 1024, 640, -0.25),
    (512, 1024, 768, -0.5),
    (512, 1024, 896, -0.75),
    (512, 1024, 1023, -511 / 512),
    (512, 1024, 1024, -1.0),
    (512, 1024, 1025, -1.0),
    (512, 1024, 100_000, -1.0),
    (10, 20, 0, 0.0),
    (10, 20, 10, 0.0),
    (10, 20, 11, -0.1),
    (10, 20, 15, -0.5),
    (10, 20, 19, -0.9),
    (10, 20, 20, -1.0),
    (10, 20, 21, -1.0),
    (0, 1, 0, 0.0),
    (0, 1, 1, -1.0),
    (0, 4, 1, -0.25),
    (0, 4, 2, -0.5),
    (0, 4, 3, -0.75),
    (100, 300, 150, -0.25),
    (100, 300, 200, -0.5),
    (100, 300, 250, -0.75),
    (100, 300, 299, -0.995),
    (100, 300, 300, -1.0),
    (100, 300, 99, 0.0),
    (100, 300, 100, 0.0),
    (1, 2, 1, 0.0),
    (1, 2, 2, -1.0),
    (1, 3, 2, -0.5),
    (5, 10, 7, -0.4),
    (5, 10, 8, -0.6),
    (5, 10, 6, -0.2),
]


@pytest.mark.parametrize("budget,limit,length,expected", LENGTH_CASES)
def test_length_penalty_table(budget, limit, length, expected):
    penalty = LengthPenalty(budget, limit)
    assert penalty(None, ["x"], completion_ids=[[0] * length]) == [pytest.approx(expected)]
    assert penalty(None, [" ".join(["w"] * length)]) == [pytest.approx(expected)]


def test_length_penalty_registered_and_validated():
    assert rewards.get_reward("length_penalty").__name__ == "length_penalty"
    with pytest.raises(ValueError):
        LengthPenalty(10, 10)
