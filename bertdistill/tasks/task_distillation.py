"""TinyBERT task distillation as `trainer.Task`s driven by `runner.run` (`TaskDistillConfig`):
a fine-tuned teacher (an export folder of run_classifier.py) into a smaller BERT, in two stages.

`TaskDistillation` is the job: the teacher, the student and its start, the data, evaluation on
dev and the export. Its stages are Tasks of their own, each training in its folder of the run
folder (checkpoints, TensorBoard, best): `IntermediateStage` (stage 1: embeddings, hidden
states and pre-softmax attention scores as the layer map says, teacher online, constant
learning rate; it leaves the layer map, the student's weights (`intermediate/student.weights.h5`)
and the projections for stage 2) and `PredictionStage` (stage 2: soft cross-entropy against the
teacher's logits, warm-up and linear decay, best-by-dev kept; with `intermediate_loss_weight` it keeps the layer
map's terms too, from stage 1's projections). Stage 2 alone may start from another run's
finished stage 1 (`intermediate_dir`), e.g. to sweep its seeds or learning rates without
training stage 1 again. The losses are `bertdistill.distill.tinybert`'s.
"""

from __future__ import annotations

import dataclasses
import filecmp
import functools
import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from bertdistill import errors

from bertdistill.data import pipeline
from bertdistill.data.data import processor_from_config

from bertdistill.distill import layer_map, transfer_set

from bertdistill.export import export

from bertdistill.models import checkpoints

from bertdistill.training import trainer, validation
from bertdistill.models.bert import BertClassifier, BertConfig
from bertdistill.configs import TaskDistillConfig
from bertdistill.errors import ConfigError, FlagError, field
from bertdistill.distill.tinybert import (IntermediateTask, JointTask, PredictionTask, distillation_classifier,
                                         init_from_teacher, parameter_count, with_distillation_outputs)
from bertdistill.data.tokenization import Tokenizer, piece_id_map

STAGE1_STUDENT = "student.weights.h5"  # in the intermediate stage's folder
STAGE1_PROJECTIONS = "projections.weights.h5"  # likewise, for a stage 2 that keeps the layer map's terms


def student_source(config: TaskDistillConfig,
                   teacher: checkpoints.Teacher) -> tuple[BertConfig, checkpoints.Pretrained | None]:
    """The student's config, and its pretrained weights when `student_model` is given (with its
    own vocabulary, see `student_tokenizer`). A `student_config` student reads the teacher's
    tokens and takes the teacher's vocab_size."""
    if config.student_model:
        pretrained = checkpoints.resolve_pretrained(config.student_model)
        if config.student_layers is not None:
            try:
                pretrained = checkpoints.select_layers(pretrained, list(config.student_layers))
            except ConfigError as e:
                raise FlagError("student_layers", f"{field('student_layers')}: {errors.detail(e)}") from None
        return pretrained.config, pretrained
    student = BertConfig.from_json_file(config.student_config)
    vocab_size = teacher.model.encoder.config.vocab_size
    if student.vocab_size != vocab_size:
        logging.info("The student takes the teacher's vocabulary: vocab_size %d (%s says %d)", vocab_size,
                     config.student_config, student.vocab_size)
        student = dataclasses.replace(student, vocab_size=vocab_size)
    return student, None


def student_tokenizer(teacher: checkpoints.Teacher, pretrained: checkpoints.Pretrained | None) -> Tokenizer:
    """The teacher's tokenizer, or a pretrained student's own when its vocabulary differs."""
    if pretrained is None or filecmp.cmp(pretrained.vocab_file, teacher.tokenizer.vocab_file, shallow=False):
        return teacher.tokenizer
    do_lower_case = teacher.tokenizer.do_lower_case if pretrained.do_lower_case is None else pretrained.do_lower_case
    return Tokenizer(pretrained.vocab_file, do_lower_case)


def stage1_folder(path: str) -> str:
    """The folder of a finished stage 1 named by `--intermediate_dir`: the folder itself, or the
    `intermediate/` of the run folder it names."""
    for folder in (path, os.path.join(path, "intermediate")):
        if os.path.isfile(os.path.join(folder, STAGE1_STUDENT)):
            return folder
    raise FlagError("intermediate_dir", f"{field('intermediate_dir')}={errors.shorten(path)} holds no finished "
                    f"stage 1: no {STAGE1_STUDENT} in it or in its intermediate/")


def check_student(config: TaskDistillConfig, teacher: checkpoints.Teacher, student: BertConfig) -> None:
    """`max_seq_length` within both models' positions."""
    for name, config_of in (("the teacher", teacher.model.encoder.config), ("the student", student)):
        validation.max_seq_length_fits(config.max_seq_length, config_of, name)


class TaskDistillation(trainer.Task):
    """The TinyBERT job (see the module docstring); `stages` are the configured stages, in order."""

    def __init__(self, config: TaskDistillConfig):
        self.config = config
        self.dry_run = config.dry_run
        self.models, self.eval_model = {}, None
        self.stage_dir = {stage: os.path.join(config.run.output_dir, stage) for stage in ("intermediate", "prediction")}
        self.stage1_dir = self.stage_dir["intermediate"]  # where stage 2 finds stage 1's student

    @property
    def matches_layers(self) -> bool:
        """Whether a stage fits the layer map's terms (stage 1, or stage 2 keeping them)."""
        return "intermediate" in self.config.stages or (
            "prediction" in self.config.stages and self.config.intermediate_loss_weight > 0)

    @property
    def student_starts_from_teacher(self) -> bool:
        return self.config.student_model is None and self.config.student_init == "teacher_layers"

    def validate(self) -> trainer.RunPlan | None:
        """The teacher, the student's shape and start, the layer map (a dry run describes them and
        ends), then the data and its features in both vocabularies when they differ."""
        config = self.config
        validation.model_path("teacher_model", config.teacher_model)
        validation.model_path("student_model", config.student_model)
        self.teacher = teacher = checkpoints.load_teacher(config.teacher_model)
        self.student_config, self.student_pretrained = student_source(config, teacher)
        self.tokenizer = student_tokenizer(teacher, self.student_pretrained)
        check_student(config, teacher, self.student_config)
        self.matches = layer_map.resolve_layer_map(config.layer_map, teacher.model.encoder.config, self.student_config)
        if self.student_starts_from_teacher:
            layer_map.check_init_from_teacher(teacher.model.encoder.config, self.student_config)
        if config.intermediate_dir:
            self.stage1_dir = stage1_folder(config.intermediate_dir)
            given = config.intermediate_dir
            if validation.inside(validation.real_path(self.stage1_dir), validation.real_path(config.run.output_dir)):
                raise FlagError("intermediate_dir", f"{field('intermediate_dir')}={errors.shorten(given)} is this "
                                f"run's own stage 1: drop it ({field('stage')}=prediction continues from it)")
            self.check_stage1()
        if config.dry_run:
            self.describe()
            return None
        self.read_data()
        data = config.data
        stage1_student = os.path.join(self.stage1_dir, STAGE1_STUDENT) if config.intermediate_dir else None
        return trainer.RunPlan(
            data_files=[config.augmented_file or data.split_file("train"), data.split_file("dev"), stage1_student],
            model_config={**self.student_config.to_dict(), "labels": self.labels},
            inputs={"teacher_model": config.teacher_model, "student_model": config.student_model,
                    "student_config": config.student_config, "data_dir": data.data_dir,
                    "augmented_file": config.augmented_file, "layer_map": layer_map.layer_map_file(config.layer_map),
                    "intermediate_dir": config.intermediate_dir},
            ignore_settings=("stage", "dry_run", "do_export"), evaluate="prediction" in config.stages,
            export=config.export.do_export and "prediction" in config.stages)

    def check_stage1(self) -> None:
        """Another run's stage 1 fits this student: its weights are this student's (names and shapes), and
        with the layer map's terms kept its layer map is this run's (its projections are made for it)."""
        teacher, path = self.teacher, os.path.join(self.stage1_dir, STAGE1_STUDENT)
        student = distillation_classifier(self.student_config, len(teacher.labels), teacher.model.pooling)
        difference = trainer.weights_file_difference(student, path)
        if difference is not None:
            raise FlagError("intermediate_dir", f"{errors.shorten(path)} is not a stage 1 of this student: "
                            f"{difference}")
        if self.matches_layers:
            recorded = layer_map.read_layer_map(os.path.join(self.stage1_dir, layer_map.LAYER_MAP_FILE),
                                                teacher.model.encoder.config, self.student_config)
            if layer_map.layer_map_to_json(recorded) != layer_map.layer_map_to_json(self.matches):
                raise FlagError("layer_map", f"{field('layer_map')}={self.config.layer_map} is not the layer map "
                                f"of the stage 1 in {errors.shorten(self.stage1_dir)} ({layer_map.LAYER_MAP_FILE}): "
                                "its projections fit that one only")

    def describe(self) -> None:
        """The dry run: the resolved layer map and the parameter counts, on stdout."""
        teacher, student_config = self.teacher, self.student_config
        student = distillation_classifier(student_config, len(teacher.labels), teacher.model.pooling)
        projections = layer_map.FeatureProjections(self.matches, teacher.model.encoder.config, student_config)
        print(layer_map.describe(self.matches, teacher.model.encoder.config, student_config))
        print(f"teacher parameters: {parameter_count(teacher.model):,}")
        print(f"student parameters: {parameter_count(student):,} (+ {parameter_count(projections):,} in "
              "training-only projections)")
        if self.student_starts_from_teacher:
            print("student layers start from teacher layers "
                  f"{layer_map.teacher_layers_for_init(self.matches, teacher.model.encoder.config, student_config)}")

    def read_data(self) -> None:
        """The training set (a transfer set, with the teacher's logits when it has them, or the
        task's train split) and dev, checked against the teacher and tokenized."""
        config, data, teacher = self.config, self.config.data, self.teacher
        self.processor = processor_from_config(data)
        if self.processor.get_labels() != teacher.labels:
            raise ConfigError(f"{config.teacher_model}/labels.json {teacher.labels} differs from task "
                              f"{data.task_name}'s labels {self.processor.get_labels()}")
        self.labels = labels = teacher.labels
        self.student_keeps_head = self.student_pretrained is not None and checkpoints.classifier_head_fits(
            config.student_model, self.student_pretrained, labels, teacher.model.pooling)
        if config.augmented_file:
            train_examples, self.teacher_logits = transfer_set.read_labelled_sentences(
                config.augmented_file, labels, on_error=data.on_error)
        else:
            train_examples, self.teacher_logits = self.processor.get_train_examples(data.data_dir), None
        self.dev = self.processor.get_dev_examples(data.data_dir)
        reads = teacher.text_inputs or self.processor.text_inputs  # an export says what the teacher reads
        for what, examples in ((config.augmented_file and f"{field('augmented_file')}={config.augmented_file}",
                                train_examples),
                               (f"the dev set of {field('task_name')}={data.task_name}", self.dev)):
            transfer_set.check_text_inputs(examples, reads, what or f"the train set of {field('task_name')}="
                                           f"{data.task_name}", f"the teacher {errors.shorten(config.teacher_model)}")
        self.check_cross_vocabulary(has_pairs=any(e.text_b is not None for e in [*train_examples, *self.dev]))

        def features(examples, of=self.tokenizer):
            return pipeline.convert_examples_to_features(examples, of, labels, config.max_seq_length)

        self.train_features = features(validation.non_empty(train_examples, "the training set"))
        self.dev_features = features(validation.non_empty(self.dev, "the dev set"))
        self.teacher_features = None  # the training set in the teacher's vocabulary, for the layer map's terms
        if self.tokenizer is not teacher.tokenizer and self.matches_layers:
            self.teacher_features = features(train_examples, teacher.tokenizer)
            bad = pipeline.misaligned(self.teacher_features, self.train_features,
                                      piece_id_map(teacher.tokenizer, self.tokenizer))
            if bad is not None:
                example = train_examples[bad]
                raise ConfigError(f"training example {example.guid} ({errors.shorten(example.text_a)!r}) is not the "
                                  "same word pieces in the teacher's and the student's vocabularies: stage 1 matches "
                                  "them position by position")

    def check_cross_vocabulary(self, has_pairs: bool) -> None:
        """What a student with its own vocabulary needs: stage 2 from the transfer set's teacher
        logits (the teacher cannot read the student's ids), single sentences (pairs put other
        special tokens between the texts, so positions differ), and the same casing."""
        teacher, tokenizer, config = self.teacher, self.tokenizer, self.config
        if tokenizer is teacher.tokenizer:
            return
        if has_pairs:
            raise ConfigError("a student with its own vocabulary learns from single sentences only: the teacher's "
                              "and the student's sentence pairs are not aligned position by position")
        if tokenizer.do_lower_case != teacher.tokenizer.do_lower_case:
            raise FlagError("student_model", f"{field('student_model')}={config.student_model} lower-cases "
                            f"({tokenizer.do_lower_case}) unlike the teacher ({teacher.tokenizer.do_lower_case})")
        if "prediction" in config.stages and self.teacher_logits is None and config.hard_label_weight < 1.0:
            raise FlagError("augmented_file", "a student with its own vocabulary learns stage 2 from the teacher's "
                            f"logits in the transfer set: pass {field('augmented_file')}=<generate_dataset.py output> "
                            "(with logit columns)")

    def build_model(self) -> None:
        self.student = distillation_classifier(self.student_config, len(self.labels), self.teacher.model.pooling)
        self.models, self.eval_model = {"student": self.student}, self.student

    def initialize(self) -> None:
        """A pretrained student's weights (with its classifier head when it is a classifier of this
        task, e.g. another student's export), or the teacher's embeddings, head and mapped layers
        (`student_init=teacher_layers`), or the random initialisation."""
        teacher = self.teacher
        if self.student_pretrained is not None:
            checkpoints.restore_weights(self.student if self.student_keeps_head else self.student.encoder,
                                        self.student_pretrained)
            if self.student_keeps_head:
                logging.info("The student keeps the classifier head of %s", self.config.student_model)
        elif self.config.student_init == "teacher_layers":
            init_from_teacher(self.student, teacher.model, layer_map.teacher_layers_for_init(
                self.matches, teacher.model.encoder.config, self.student_config))
        logging.info("Teacher %d parameters, student %d; %d training examples%s", parameter_count(teacher.model),
                     parameter_count(self.student), len(self.train_features),
                     " with teacher logits" if self.teacher_logits is not None else "")

    @functools.cached_property
    def online_teacher(self) -> BertClassifier:
        """The teacher rebuilt to return its hidden states and attention scores too (one per job)."""
        return with_distillation_outputs(self.teacher.model)

    def intermediate_task(self) -> IntermediateTask:
        """The layer map's terms between the teacher (online) and the student, through fresh projections."""
        projections = layer_map.FeatureProjections(self.matches, self.teacher.model.encoder.config,
                                                   self.student_config)
        return IntermediateTask(self.online_teacher.encoder, self.student, self.student.encoder, self.matches,
                                projections)

    def stages(self) -> list[trainer.Task]:
        kinds = {"intermediate": IntermediateStage, "prediction": PredictionStage}
        return [kinds[stage](self) for stage in self.config.stages]

    def build_inputs(self, split: str, *, epoch: int = 0, batch_size: int | None = None) -> tf.data.Dataset:
        """Dev batches (the student's tokens)."""
        if split != "dev":
            raise ValueError(f"the job reads dev only (training is its stages'), not {split!r}")
        return pipeline.make_dataset(self.dev_features, batch_size=batch_size or self.config.train.eval_batch_size,
                                     is_training=False)

    def trained_step(self) -> int:
        best = trainer.read_best(self.stage_dir["prediction"])
        return best["global_step"] if best else 0

    def num_examples(self, split: str) -> int:
        return len(self.dev_features)

    def dev_examples(self) -> Sequence:
        return self.dev

    def export(self, folder: str, sample: dict[str, np.ndarray]) -> None:
        """The best student like the teacher (`export.export_bert_classifier`), without the
        training-only projections."""
        config = self.config
        export.export_bert_classifier(
            self.student, folder, vocab_file=self.tokenizer.vocab_file, labels=self.labels,
            do_lower_case=self.tokenizer.do_lower_case, sample=sample,
            info={"model": "tinybert", "task_name": config.data.task_name, **self.processor.input_record(),
                  "max_seq_length": config.max_seq_length, "teacher": os.path.abspath(config.teacher_model),
                  "best": trainer.read_best(self.stage_dir["prediction"]), "stages": list(config.stages),
                  "layer_map": layer_map.layer_map_to_json(self.matches)},
            int8_keep_float=config.export.int8_keep_float)


class IntermediateStage(trainer.Task):
    """Stage 1 of `job`: the layer map's terms between the teacher (online) and the student,
    through training-only projections; optionally on a seeded subset of the training set."""

    def __init__(self, job: TaskDistillation):
        self.job, self.config = job, job.config
        self.eval_model = None
        self.folder = job.stage_dir["intermediate"]
        self.features, self.teacher_features = job.train_features, job.teacher_features
        limit = self.config.intermediate_max_examples
        if limit and limit < len(self.features):
            chosen = np.sort(np.random.default_rng(self.config.run.seed).choice(len(self.features), limit,
                                                                                replace=False))
            self.features = self.features.select(chosen)
            self.teacher_features = self.teacher_features.select(chosen) if self.teacher_features is not None else None

    def build_model(self) -> None:
        job = self.job
        teacher_config = job.teacher.model.encoder.config
        self.losses = job.intermediate_task()
        self.models = self.losses.models
        logging.info("Stage 1 (intermediate layers) on %d examples:\n%s", len(self.features),
                     layer_map.describe(job.matches, teacher_config, job.student_config))

    def loss_terms(self, x, y):
        return self.losses.loss_terms(x, y)

    def schedule(self) -> trainer.Schedule:
        stage = self.config.stages["intermediate"]
        return trainer.Schedule(output_dir=self.folder, num_train_epochs=stage.epochs,
                                learning_rate=stage.learning_rate, constant_learning_rate=True, evaluate=False)

    def build_inputs(self, split: str, *, epoch: int = 0, batch_size: int | None = None) -> tf.data.Dataset:
        config = self.config
        return pipeline.make_dataset(self.features, batch_size=config.train.train_batch_size, is_training=True,
                                     seed=config.run.seed + epoch, max_seq_length=config.max_seq_length,
                                     static_padding=config.train.use_xla, teacher_features=self.teacher_features)

    def steps_per_epoch(self) -> int:
        return pipeline.num_batches(self.features, batch_size=self.config.train.train_batch_size, is_training=True,
                                    max_seq_length=self.config.max_seq_length)

    def finish_stage(self, chief: bool) -> None:
        """The layer map, the student's weights and the projections, for stage 2
        (`intermediate/student.weights.h5`, `intermediate/projections.weights.h5`)."""
        if chief:
            layer_map.write_layer_map(self.job.matches, os.path.join(self.folder, layer_map.LAYER_MAP_FILE))
            trainer.save_model_weights(self.job.student, os.path.join(self.folder, STAGE1_STUDENT))
            trainer.save_model_weights(self.losses.projections, os.path.join(self.folder, STAGE1_PROJECTIONS))


class PredictionStage(trainer.Task):
    """Stage 2 of `job`: the student's logits against the teacher's (from the transfer set, else
    the teacher online when it reads the student's tokens) at `temperature`, mixed with the gold
    labels by `hard_label_weight`, and the layer map's terms at `intermediate_loss_weight` when it
    is > 0 (`JointTask`); starts from stage 1's student and projections when there are some."""

    def __init__(self, job: TaskDistillation):
        self.job, self.config = job, job.config
        self.folder = job.stage_dir["prediction"]
        self.extras = {"teacher_logits": job.teacher_logits} if job.teacher_logits is not None else None
        self.joint = self.config.intermediate_loss_weight > 0  # the layer map's terms too (`JointTask`)
        self.teacher_features = job.teacher_features if self.joint else None

    def build_model(self) -> None:
        job = self.job
        online = job.teacher.model if job.tokenizer is job.teacher.tokenizer else None  # it cannot read other ids
        self.losses = PredictionTask(job.student, online, self.config.temperature, self.config.hard_label_weight)
        if self.joint:  # without logits in the batches, the teacher's logits and features come from one pass
            runs_teacher = online is not None and self.extras is None and self.config.hard_label_weight < 1.0
            self.losses = JointTask(self.losses, job.intermediate_task(), self.config.intermediate_loss_weight,
                                    teacher=job.online_teacher if runs_teacher else None)
        self.models, self.eval_model = self.losses.models, job.student

    def initialize(self) -> None:
        stage1 = self.job.stage1_dir
        restores = [(self.job.student, STAGE1_STUDENT, "student")]
        if self.joint:
            restores.append((self.losses.intermediate.projections, STAGE1_PROJECTIONS, "projections"))
        for model, name, what in restores:
            path = os.path.join(stage1, name)
            if os.path.exists(path):
                keras.saving.load_weights(model, path)
                logging.info("Stage 2 starts from stage 1's %s: %s", what, path)

    def loss_terms(self, x, y):
        return self.losses.loss_terms(x, y)

    def schedule(self) -> trainer.Schedule:
        stage = self.config.stages["prediction"]
        return trainer.Schedule(output_dir=self.folder, num_train_epochs=stage.epochs,
                                learning_rate=stage.learning_rate)

    def build_inputs(self, split: str, *, epoch: int = 0, batch_size: int | None = None) -> tf.data.Dataset:
        config = self.config
        if split != "train":
            return self.job.build_inputs(split, batch_size=batch_size)
        return pipeline.make_dataset(self.job.train_features, batch_size=config.train.train_batch_size,
                                     is_training=True, seed=config.run.seed + epoch,
                                     max_seq_length=config.max_seq_length, static_padding=config.train.use_xla,
                                     extras=self.extras, teacher_features=self.teacher_features)

    def steps_per_epoch(self) -> int:
        return pipeline.num_batches(self.job.train_features, batch_size=self.config.train.train_batch_size,
                                    is_training=True, max_seq_length=self.config.max_seq_length)
