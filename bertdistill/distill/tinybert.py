"""TinyBERT (Jiao et al., 2020) as trainer tasks: intermediate-layer distillation (stage 1, and
general distillation) and prediction-layer distillation (stage 2), plus the student's start.

Stage 1 (`IntermediateTask`) runs the teacher online (its hidden states and attention scores
cannot be stored: hundreds of GB for an augmented SST-2) and fits the student's embeddings,
hidden states and pre-softmax attention scores to the teacher's, as the layer map says
(`bertdistill/distill/layer_map.py`), through one trainable projection per match whose widths differ.
Stage 2 (`PredictionTask`) fits the student's logits to the teacher's with the soft
cross-entropy at temperature T (times T^2, which is 1 at TinyBERT's T=1), taking the teacher's
logits from the transfer set when it has them and running the teacher otherwise.

The student is a `BertClassifier` whose encoder also returns hidden states and attention scores
(`distillation_classifier`): the same weights serve both stages and the export, where only the
logits are used. Its start (`--student_init`): `teacher_layers` copies the teacher's embeddings,
pooler, classifier head and the mapped transformer layers (a 3-layer student of a 6-layer
teacher starts from layers 2, 4, 6); `random` keeps the initialisation; a general-distillation
folder (`--student_model`) restores an encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from bertdistill.models.bert import BertClassifier, BertConfig, BertEncoder
from bertdistill.models.encoders import build_encoder
from bertdistill.distill.distill import distillation_terms
from bertdistill.distill.layer_map import FeatureProjections, Match, copy_teacher_layers, intermediate_loss_terms
from bertdistill.data.pipeline import TEACHER_PREFIX
from bertdistill.training.trainer import Task


def distillation_classifier(config: BertConfig, num_labels: int, pooling: str) -> BertClassifier:
    """A classifier whose encoder also returns every hidden state and the attention scores."""
    return BertClassifier(build_encoder(config, output_hidden_states=True, output_attentions=True), num_labels,
                          pooling=pooling)


def with_distillation_outputs(model: BertClassifier) -> BertClassifier:
    """`model` rebuilt by `distillation_classifier`, with its weights (the teacher of stage 1)."""
    twin = distillation_classifier(model.encoder.config, model.num_labels, model.pooling)
    twin.set_weights(model.get_weights())
    return twin


def init_from_teacher(student: BertClassifier, teacher: BertClassifier, teacher_layers: Sequence[int]) -> None:
    """`--student_init=teacher_layers`: embeddings, pooler and layers `teacher_layers` (1-based, one
    per student layer) copied from the teacher, and its classifier head."""
    copy_teacher_layers(teacher.encoder, student.encoder, teacher_layers)
    if student.pooling != teacher.pooling:
        raise ValueError(f"student pooling {student.pooling!r} differs from the teacher's {teacher.pooling!r}")
    for target, source in zip(student.head.weights, teacher.head.weights):
        target.assign(source)


def parameter_count(model: keras.Model) -> int:
    return int(sum(int(tf.size(w)) for w in model.weights))


class IntermediateTask(Task):
    """Stage 1 / general distillation: the layer map's terms between teacher and student encoders.

    Both read the batch's inputs, or, for a student with its own vocabulary, the teacher reads
    the batch's `teacher_*` inputs (the same word pieces in the teacher's ids, position by position).

    `student_model` is what trains and is checkpointed (a classifier in task distillation, the
    encoder itself in general distillation); `projections` train with it and are never exported.
    """

    def __init__(self, teacher_encoder: BertEncoder, student_model: keras.Model, student_encoder: BertEncoder,
                 matches: Sequence[Match], projections: FeatureProjections):
        self.teacher_encoder, self.student_encoder = teacher_encoder, student_encoder
        self.matches = list(matches)
        self.projections = projections
        self.models = {"student": student_model, "projections": projections}

    def loss_terms(self, x, y):
        student_x, teacher_x = split_inputs(x)
        return self.feature_terms(self.teacher_encoder(teacher_x, training=False),
                                  self.student_encoder(student_x, training=True), student_x["attention_mask"])

    def feature_terms(self, teacher_outputs: dict, student_outputs: dict, attention_mask) -> dict:
        """The layer map's terms of the student's encoder outputs against the teacher's."""
        return intermediate_loss_terms(self.matches, teacher_outputs, student_outputs, attention_mask,
                                       self.projections)


def split_inputs(x: dict) -> tuple[dict, dict]:
    """(the student's inputs, the teacher's): the batch's `teacher_*` inputs when it has them
    (a student with its own vocabulary), else the student's."""
    student_x = {k: v for k, v in x.items() if not k.startswith(TEACHER_PREFIX)}
    teacher_x = {k[len(TEACHER_PREFIX):]: v for k, v in x.items() if k.startswith(TEACHER_PREFIX)} or student_x
    return student_x, teacher_x


class PredictionTask(Task):
    """Stage 2: soft cross-entropy of the student's logits against the teacher's at temperature T,
    mixed with the gold-label cross-entropy by `hard_label_weight` w: (1 - w) * soft + w * hard
    (w = 1: plain fine-tuning, no teacher); the loss `tinybert_prediction` of
    `bertdistill.distill.distill`. The student runs once per step.

    The teacher's logits come from the batch (`y["teacher_logits"]`, a transfer set with logits)
    or, when the batch has none, from `teacher` run on the same inputs (only when w < 1).
    """

    def __init__(self, student: BertClassifier, teacher: keras.Model | None, temperature: float = 1.0,
                 hard_label_weight: float = 0.0):
        self.terms = distillation_terms("tinybert_prediction", temperature=temperature, alpha=hard_label_weight,
                                        names=("temperature", "hard_label_weight"))
        self.student, self.teacher, self.temperature = student, teacher, temperature
        self.hard_label_weight = hard_label_weight
        self.models = {"student": student}
        self.eval_model = student

    def _teacher_logits(self, x, y):
        if isinstance(y, dict) and "teacher_logits" in y:
            return y["teacher_logits"]
        if self.teacher is None:
            raise ValueError("no teacher logits in the batch and no teacher model")
        return self.teacher(x, training=False)

    def loss_terms(self, x, y):
        return self.logit_terms(x, y, self.student(x, training=True))

    def logit_terms(self, x, y, student_logits) -> dict:
        """The soft (and hard) cross-entropy terms of `student_logits` for the batch (x, y)."""
        teacher_logits = self._teacher_logits(x, y) if self.hard_label_weight < 1.0 else None
        labels = (y["label_ids"] if isinstance(y, dict) else y) if self.hard_label_weight > 0.0 else None
        return self.terms(labels, teacher_logits, student_logits)


class JointTask(Task):
    """Stage 2 with stage 1's terms kept: `prediction`'s logit terms plus `intermediate`'s layer-map
    terms times `intermediate_weight` (TextBrewer's intermediate matches beside the logits), from one
    pass of the student that yields its logits and its encoder's outputs.

    `teacher` (a `with_distillation_outputs` classifier), given when the batches carry no teacher
    logits, likewise yields the teacher's logits and its encoder's outputs from one pass; without
    it the teacher's encoder runs for the features and the logits come from the batch.
    """

    def __init__(self, prediction: PredictionTask, intermediate: IntermediateTask, intermediate_weight: float,
                 teacher: BertClassifier | None = None):
        self.prediction, self.intermediate, self.intermediate_weight = prediction, intermediate, intermediate_weight
        self.student = prediction.student.with_encoder_outputs()
        self.teacher = teacher.with_encoder_outputs() if teacher is not None else None
        self.models = {"student": prediction.student, "projections": intermediate.projections}
        self.eval_model = prediction.student

    def loss_terms(self, x, y):
        student_x, teacher_x = split_inputs(x)
        logits, outputs = self.student(student_x, training=True)
        if self.teacher is not None:
            teacher_logits, teacher_outputs = self.teacher(teacher_x, training=False)
            y = {"label_ids": y["label_ids"] if isinstance(y, dict) else y, "teacher_logits": teacher_logits}
        else:
            teacher_outputs = self.intermediate.teacher_encoder(teacher_x, training=False)
        terms = self.prediction.logit_terms(student_x, y, logits)
        features = self.intermediate.feature_terms(teacher_outputs, outputs, student_x["attention_mask"])
        for name, value in features.items():
            terms[name] = value * self.intermediate_weight
        return terms
