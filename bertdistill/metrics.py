"""Accuracy, in one unit: the fraction of examples whose predicted label is the gold one (0..1),
as `eval_results.txt` (`eval_accuracy`), `best/metrics.json` (`val_accuracy`) and TensorBoard
record it.

Reports written for people are in percent (points): the results report (`results.json`,
`results.md`), the robustness tables and the INT8 gate, whose `--int8_max_drop` is in points.
They convert with `percent` where they record a value. No TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(predicted: Sequence, labels: Sequence) -> float:
    """The fraction of `predicted` equal to `labels` (label ids, or label strings), 0..1."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape:
        raise ValueError(f"{predicted.shape[0] if predicted.ndim else predicted.shape} predictions for "
                         f"{len(labels)} labels")
    return float(np.mean(predicted == labels))


def percent(fraction: float) -> float:
    """An accuracy in percent (points), for reports people read."""
    return 100.0 * fraction
