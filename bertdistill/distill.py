"""Distillation losses as plain functions looked up by name, and a Keras model that trains a
student on teacher logits stored beside the data (the BiLSTM case: teacher and student do not
share inputs, so the teacher runs once, offline, in `generate_dataset.py`).

- `mse`: the squared L2 distance between student and teacher logits, summed over classes and
  averaged over the batch (Tang et al., 2019).
- `kd`: Hinton et al. (2015): `(1 - alpha) * T^2 * CE(softmax(t / T), softmax(s / T))
  + alpha * CE(labels, softmax(s))`; `alpha` is the weight of the hard-label loss and the
  `T^2` keeps the soft term's gradients on the scale of the hard one's.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

PACKAGE = "bertdistill"
LOSS_TERMS = {"mse": ("mse_loss",), "kd": ("soft_loss", "hard_loss")}


def logits_mse(teacher_logits, student_logits):
    """Squared L2 distance between logits, summed over classes, mean over the batch."""
    difference = ops.cast(student_logits, "float32") - ops.cast(teacher_logits, "float32")
    return ops.mean(ops.sum(ops.square(difference), axis=-1))


def soft_cross_entropy(teacher_logits, student_logits, temperature: float = 1.0):
    """Cross-entropy of the student's softened distribution against the teacher's, times T^2."""
    teacher = ops.softmax(ops.cast(teacher_logits, "float32") / temperature, axis=-1)
    student = ops.log_softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
    return -ops.mean(ops.sum(teacher * student, axis=-1)) * temperature ** 2


def hard_cross_entropy(label_ids, student_logits):
    """Mean cross-entropy of the student's logits against integer labels."""
    return ops.mean(keras.losses.sparse_categorical_crossentropy(
        label_ids, ops.cast(student_logits, "float32"), from_logits=True))


def distillation_terms(name: str, *, temperature: float = 1.0,
                       alpha: float = 0.0) -> Callable[..., dict[str, object]]:
    """`fn(label_ids, teacher_logits, student_logits) -> {term: weighted value}` for loss `name`
    (terms as in `LOSS_TERMS`); the loss is the sum of the terms."""
    if name == "mse":
        return lambda labels, teacher, student: {"mse_loss": logits_mse(teacher, student)}
    if name == "kd":
        if temperature <= 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"kd needs temperature > 0 and 0 <= alpha <= 1; got {temperature}, {alpha}")

        return lambda labels, teacher, student: {
            "soft_loss": (1.0 - alpha) * soft_cross_entropy(teacher, student, temperature),
            "hard_loss": alpha * hard_cross_entropy(labels, student)}
    raise ValueError(f"unknown distillation loss {name!r}; expected one of {tuple(LOSS_TERMS)}")


class LogitsDistiller(keras.Model):
    """Wraps a student; trains it on batches whose `y` is `{"label_ids", "teacher_logits"}`.

    Batches with plain label ids as `y` (the dev set) get the hard-label cross-entropy, so
    `val_loss` is comparable across runs. Reports `accuracy` against the labels and every loss
    term as its own metric. Save and export `distiller.student`.
    """

    def __init__(self, student: keras.Model, loss: str = "mse", temperature: float = 1.0, alpha: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.terms = distillation_terms(loss, temperature=temperature, alpha=alpha)
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.term_metrics = [keras.metrics.Mean(name=term) for term in LOSS_TERMS[loss]]
        self.built = student.built  # its only weights are the student's (restorable before any fit)

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(y, dict):
            return hard_cross_entropy(y, y_pred)
        terms = self.terms(y["label_ids"], y["teacher_logits"], y_pred)
        for metric in self.term_metrics:
            metric.update_state(terms[metric.name])
        return sum(terms.values())

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.accuracy.update_state(y["label_ids"] if isinstance(y, dict) else y, y_pred)
        results = self.get_metrics_result()
        if not isinstance(y, dict):  # no teacher logits: the distillation terms were not computed
            for metric in self.term_metrics:
                results.pop(metric.name)
        return results
