import pytest

from paft_rl.selection.continual import sequence_metrics
from prompt_pool import UserError


def test_hand_computed_three_tasks():
    matrix = [[0.8, 0.3, 0.2],
              [0.6, 0.9, 0.4],
              [0.5, 0.7, 0.95]]
    baseline = [0.25, 0.25, 0.25]
    metrics = sequence_metrics(matrix, baseline)
    assert metrics["AP"] == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert metrics["BWT"] == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)  # -0.25: forgetting
    assert metrics["FWT"] == pytest.approx(((0.3 - 0.25) + (0.4 - 0.25)) / 2)  # 0.10


def test_single_task():
    assert sequence_metrics([[0.7]], [0.2]) == {"AP": 0.7, "BWT": None, "FWT": None}


@pytest.mark.parametrize("matrix, baseline", [([], []), ([[1, 2], [3]], [0, 0]), ([[1, 2], [3, 4]], [0])])
def test_bad_shapes(matrix, baseline):
    with pytest.raises(UserError, match="square"):
        sequence_metrics(matrix, baseline)
