"""Every distillation loss, in one registry looked up by name, and the trainer task that fits a
student to teacher logits stored beside the data (the BiLSTM case: teacher and student do not
share inputs, so the teacher runs once, offline, in `generate_dataset.py`).

Losses on logits (`LOGIT_LOSSES`, `distillation_terms(name, temperature=..., alpha=...)`: a
function `(label_ids, teacher_logits, student_logits) -> {term: weighted value}`, the loss being
the sum of the terms, each logged on its own):

- `mse`: the squared L2 distance between student and teacher logits, summed over classes and
  averaged over the batch (Tang et al., 2019); term `mse_loss`.
- `kd`: Hinton et al. (2015): `(1 - alpha) * T^2 * CE(softmax(t / T), softmax(s / T))
  + alpha * CE(labels, softmax(s))`; `alpha` is the weight of the hard-label loss and the
  `T^2` keeps the soft term's gradients on the scale of the hard one's; terms `soft_loss`,
  `hard_loss`.
- `tinybert_prediction`: TinyBERT's prediction-layer loss (stage 2, `bertdistill.distill.tinybert`), the
  same mix with `alpha` its `hard_label_weight`, a term only when its weight is not 0 (so the
  teacher's logits are not needed at weight 1, nor labels at weight 0); terms
  `soft_cross_entropy`, `hard_cross_entropy`.

Losses on intermediate features (`FEATURE_LOSSES`, `feature_loss(name, feature)`, TinyBERT's
stage 1 and general distillation; which layers meet is data, `bertdistill/distill/layer_map.py`).

The temperature and the hard-label weight are checked in one place, `check_temperature`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import keras
from keras import ops

from bertdistill.training.trainer import Task

Terms = Callable[..., dict[str, object]]  # (label_ids, teacher_logits, student_logits) -> {term: value}


def check_temperature(temperature: float, alpha: float, names: Sequence[str] = ("temperature", "alpha")) -> None:
    """The check of a distillation's temperature (> 0) and hard-label weight (0..1), written once;
    a ValueError naming them as `names` (e.g. flags: `("--temperature", "--hard_label_weight")`)."""
    if not temperature > 0 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"need {names[0]} > 0 and 0 <= {names[1]} <= 1; got {temperature}, {alpha}")


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


def _mse_terms(temperature: float, alpha: float) -> Terms:
    return lambda labels, teacher, student: {"mse_loss": logits_mse(teacher, student)}


def _kd_terms(temperature: float, alpha: float) -> Terms:
    return lambda labels, teacher, student: {
        "soft_loss": (1.0 - alpha) * soft_cross_entropy(teacher, student, temperature),
        "hard_loss": alpha * hard_cross_entropy(labels, student)}


def _tinybert_prediction_terms(temperature: float, alpha: float) -> Terms:
    def terms(labels, teacher, student):
        out = {}
        if alpha < 1.0:
            out["soft_cross_entropy"] = (1.0 - alpha) * soft_cross_entropy(teacher, student, temperature)
        if alpha > 0.0:
            out["hard_cross_entropy"] = alpha * hard_cross_entropy(labels, student)
        return out

    return terms


@dataclasses.dataclass(frozen=True)
class LogitLoss:
    """A loss on logits: the names of its terms and `make(temperature, alpha) -> Terms`."""

    terms: tuple[str, ...]
    make: Callable[[float, float], Terms]


LOGIT_LOSSES = {"mse": LogitLoss(("mse_loss",), _mse_terms),
                "kd": LogitLoss(("soft_loss", "hard_loss"), _kd_terms),
                "tinybert_prediction": LogitLoss(("soft_cross_entropy", "hard_cross_entropy"),
                                                 _tinybert_prediction_terms)}
LOSS_TERMS = {name: loss.terms for name, loss in LOGIT_LOSSES.items()}
STORED_LOGITS_LOSSES = ("mse", "kd")  # what the BiLSTM's --distill_loss offers


def distillation_terms(name: str, *, temperature: float = 1.0, alpha: float = 0.0,
                       names: Sequence[str] = ("temperature", "alpha")) -> Terms:
    """`fn(label_ids, teacher_logits, student_logits) -> {term: weighted value}` of the logit loss
    `name` (terms as in `LOSS_TERMS`; the loss is their sum), after `check_temperature` (the
    settings called `names` in its message)."""
    if name not in LOGIT_LOSSES:
        raise ValueError(f"unknown distillation loss {name!r}; expected one of {tuple(LOGIT_LOSSES)}")
    check_temperature(temperature, alpha, names)
    return LOGIT_LOSSES[name].make(temperature, alpha)


class LogitsDistillationTask(Task):
    """A trainer task: fits a student to teacher logits stored beside the data (`y` is
    `{"label_ids", "teacher_logits"}`), with the loss terms of `distillation_terms(loss, ...)`.

    The student itself is evaluated on dev (hard-label cross-entropy and accuracy) and exported.
    """

    def __init__(self, student: keras.Model, loss: str = "mse", temperature: float = 1.0, alpha: float = 0.0):
        self.models = {"student": student}
        self.eval_model = student
        self.terms = distillation_terms(loss, temperature=temperature, alpha=alpha)

    def loss_terms(self, x, y):
        return self.terms(y["label_ids"], y["teacher_logits"], self.eval_model(x, training=True))


# ---------------------------------------------------------------------------------------------
# Intermediate-layer losses (TinyBERT). Which layers meet, and with what weight, is data: see
# `bertdistill/distill/layer_map.py`. Every loss averages over real tokens only and returns float32.


def _float_mask(attention_mask):
    return ops.cast(attention_mask, "float32")


def hidden_mse(teacher, student, attention_mask):
    """MSE between hidden states [B, T, H] over each example's real tokens, one float32 value per
    example [B]: `sum_t(mask * (s - t)^2) / (real_tokens * H)`. Per example, so that a batch split
    over replicas gives the same loss as the whole batch. Used for the embedding output too."""
    teacher = ops.cast(teacher, "float32")
    student = ops.cast(student, "float32")
    if teacher.shape[-1] is not None and student.shape[-1] is not None and teacher.shape[-1] != student.shape[-1]:
        raise ValueError(f"hidden_mse: teacher width {teacher.shape[-1]} != student width {student.shape[-1]} "
                         "(project the student first)")
    mask = _float_mask(attention_mask)[:, :, None]
    squared = ops.sum(mask * ops.square(student - teacher), axis=(1, 2))
    width = ops.cast(ops.shape(student)[-1], "float32")
    return squared / (ops.maximum(ops.sum(mask, axis=(1, 2)), 1.0) * width)


def attention_mse(teacher_scores, student_scores, attention_mask):
    """MSE between attention scores before softmax, [B, heads, T, T], over real (query, key)
    pairs: pairs with a padded query or key are zeroed in both models (the reference code zeroes
    values <= -100; our padded keys carry -10000), then per example [B], float32:
    `sum(valid * (s - t)^2) / (heads * sum(valid))`. Head counts must match."""
    teacher = ops.cast(teacher_scores, "float32")
    student = ops.cast(student_scores, "float32")
    if teacher.shape[1] is not None and student.shape[1] is not None and teacher.shape[1] != student.shape[1]:
        raise ValueError(f"attention_mse: teacher has {teacher.shape[1]} heads, student {student.shape[1]}; "
                         "the attention loss averages over heads, so the counts must match")
    mask = _float_mask(attention_mask)
    valid = mask[:, None, :, None] * mask[:, None, None, :]  # [B, 1, T(query), T(key)]
    squared = ops.sum(valid * ops.square(student - teacher), axis=(1, 2, 3))
    heads = ops.cast(ops.shape(student)[1], "float32")
    return squared / (ops.maximum(ops.sum(valid, axis=(1, 2, 3)), 1.0) * heads)


# Feature losses by name, then by feature: `"loss": "mse"` in a layer map selects hidden_mse for
# embeddings and hidden states, attention_mse for attention scores.
FEATURE_LOSSES = {"mse": {"embeddings": hidden_mse, "hidden": hidden_mse, "attention": attention_mse}}


def feature_loss(name: str, feature: str) -> Callable[..., object]:
    """The loss `fn(teacher, student, attention_mask)` registered as `name` for `feature`."""
    if name not in FEATURE_LOSSES:
        raise ValueError(f"unknown feature loss {name!r}; expected one of {tuple(FEATURE_LOSSES)}")
    by_feature = FEATURE_LOSSES[name]
    if feature not in by_feature:
        raise ValueError(f"feature loss {name!r} has no version for feature {feature!r}; "
                         f"expected one of {tuple(by_feature)}")
    return by_feature[feature]
