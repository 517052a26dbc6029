"""bertdistill/metrics.py: one accuracy, a fraction; percent only for reports."""
import numpy as np
import pytest

from bertdistill.metrics import accuracy, percent


def test_accuracy_is_a_fraction_and_percent_converts_it():
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75 and percent(0.75) == 75.0
    assert accuracy(["pos", "neg"], ["pos", "pos"]) == 0.5  # label strings too
    assert isinstance(accuracy(np.array([1]), np.array([1])), float)
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        accuracy([0, 1, 1], [0, 1])


@pytest.mark.parametrize("size", [1, 7, 872, 1821])
def test_the_same_bits_as_a_count_and_as_a_percent_of_the_mean(size):
    rng = np.random.default_rng(size)
    predicted, labels = rng.integers(0, 2, size), rng.integers(0, 2, size)
    correct = int((predicted == labels).sum())
    assert accuracy(predicted, labels) == correct / size  # as the trainer counted it
    assert percent(accuracy(predicted, labels)) == float(100.0 * np.mean(predicted == labels))  # as reports did
