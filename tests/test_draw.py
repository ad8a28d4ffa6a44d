"""The determinism invariant: a template draw is a pure function of (seed, row id, position)."""

import subprocess
import sys
from collections import Counter

from prompt_pool import PromptPool, Template, draw_index

POOL = PromptPool(
    [Template(f"train-{i}", f"{i}: {{question}}") for i in range(24)]
    + [Template(f"heldout-{i}", f"H{i}: {{question}}", "heldout") for i in range(10)]
)
DRAW_SCRIPT = """
import sys
from prompt_pool import PromptPool, Template
pool = PromptPool([Template(f"train-{i}", f"{i}: {{question}}") for i in range(24)]
                  + [Template(f"heldout-{i}", f"H{i}: {{question}}", "heldout") for i in range(10)])
start = int(sys.argv[1])
print(",".join(pool.draw(7, row, position).id for position in range(start, 40) for row in range(50)))
"""


def draws_in_fresh_process(start_position: int) -> list[str]:
    # A fresh interpreter has a different hash seed (PYTHONHASHSEED) and no shared state.
    output = subprocess.run([sys.executable, "-c", DRAW_SCRIPT, str(start_position)], check=True,
                            capture_output=True, text=True).stdout
    return output.strip().split(",")


def test_identical_across_two_processes():
    assert draws_in_fresh_process(0) == draws_in_fresh_process(0)
    local = [POOL.draw(7, row, position).id for position in range(40) for row in range(50)]
    assert draws_in_fresh_process(0) == local


def test_resume_continues_the_same_sequence():
    uninterrupted = draws_in_fresh_process(0)
    resumed = draws_in_fresh_process(25)  # a process that starts at position 25, as after a resume
    assert resumed == uninterrupted[25 * 50:]


def test_uniform_over_train_pool_chi_square():
    counts = Counter(POOL.draw(11, row, 0).id for row in range(10_000))
    assert set(counts) <= {t.id for t in POOL.train}
    expected = 10_000 / 24
    chi_square = sum((counts[t.id] - expected) ** 2 / expected for t in POOL.train)
    # Critical value of chi-square with 23 degrees of freedom at p = 0.001 is 49.73.
    assert chi_square < 49.73, chi_square


def test_heldout_never_drawn():
    heldout = {t.id for t in POOL.heldout}
    drawn = {POOL.draw(seed, row, position).id for seed in range(3) for row in range(300) for position in range(5)}
    assert not drawn & heldout
    assert len(drawn) == 24


def test_inputs_change_the_draw():
    base = [POOL.draw(1, row, 0).id for row in range(200)]
    assert base != [POOL.draw(2, row, 0).id for row in range(200)]
    assert base != [POOL.draw(1, row, 1).id for row in range(200)]


def test_weighted_draws_follow_weights():
    weights = [0.0] * 24
    weights[3], weights[5] = 1.0, 3.0
    counts = Counter(POOL.draw(0, row, 0, weights=weights).id for row in range(4000))
    assert set(counts) == {"train-3", "train-5"}
    assert 0.70 < counts["train-5"] / 4000 < 0.80
    by_id = Counter(POOL.draw(0, row, 0, weights={"train-3": 1.0}).id for row in range(100))
    assert by_id == {"train-3": 100}


def test_draw_index_rejects_bad_weights():
    import pytest

    for weights in ([1.0], [0.0, 0.0], [-1.0, 2.0], [float("nan"), 1.0]):
        with pytest.raises(ValueError):
            draw_index(0, 0, 0, 2, weights)
