"""Fine-tuning a BERT-family classifier (the teacher) as a `trainer.Task` driven by `runner.run`:
train, evaluate, predict and export, as Google's run_classifier.py does (`FinetuneConfig`).

Without training, the model evaluated, used for predictions or exported is the one trained in
the run folder (its best-by-dev weights, else its latest checkpoint), else a fine-tuned
`init_checkpoint` (an export folder).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from bertdistill import errors

from bertdistill.data import pipeline
from bertdistill.data.data import processor_from_config

from bertdistill.export import export

from bertdistill.models import checkpoints

from bertdistill.tasks import runner

from bertdistill.training import trainer, validation
from bertdistill.models.bert import BertClassifier
from bertdistill.configs import FinetuneConfig
from bertdistill.models.encoders import build_encoder
from bertdistill.errors import FlagError, UserError, field
from bertdistill.export_format import LABELS
from bertdistill.data.tokenization import Tokenizer, check_casing


def check_pretrained(config: FinetuneConfig, pretrained: checkpoints.Pretrained) -> None:
    """Fails fast, as run_classifier does, before any data is read or model built: lower-casing
    consistent with the checkpoint, `max_seq_length` within its positions."""
    casing = field("do_lower_case")
    if pretrained.do_lower_case is not None and pretrained.do_lower_case != config.do_lower_case:
        raise FlagError("do_lower_case", f"{casing}={config.do_lower_case} but {pretrained.source} was "
                        f"trained with do_lower_case={pretrained.do_lower_case}")
    name = os.path.basename(os.path.dirname(pretrained.source)).lower()  # Google: .../uncased_L-12_H-768_A-12/
    if name.startswith(("uncased_", "cased_")) and name.startswith("uncased_") != config.do_lower_case:
        raise FlagError("do_lower_case", f"{casing}={config.do_lower_case} is inconsistent with {pretrained.source}")
    validation.max_seq_length_fits(config.max_seq_length, pretrained.config, pretrained.source)


def check_labels(config: FinetuneConfig, pretrained: checkpoints.Pretrained, labels: list[str]) -> None:
    """A fine-tuned `init_checkpoint` (an export folder: labels.json) must classify the task's labels."""
    path = os.path.join(pretrained.source, LABELS)
    if "output_weights" not in pretrained.weights or not os.path.isfile(path):
        return
    own = errors.read_json(path, "labels file")
    if not isinstance(own, list) or [str(label) for label in own] != labels:
        raise FlagError("init_checkpoint", f"{field('init_checkpoint')}={pretrained.source} classifies "
                        f"{errors.shorten(own)} (its labels.json) but {field('task_name')}={config.data.task_name} "
                        f"has labels {labels}: pass the task (or {field('labels')}) it was trained on")


class FinetuneTask(trainer.ClassifierTask):
    """A `BertClassifier` trained with cross-entropy on the task's labels (`FinetuneConfig`)."""

    def __init__(self, config: FinetuneConfig):
        self.config = config
        self.models, self.eval_model = {}, None
        self.examples: dict[str, Sequence] = {}
        self.features: dict[str, pipeline.Features] = {}

    @property
    def exporting(self) -> bool:
        return self.config.export.do_export

    def check(self) -> None:
        validation.model_path("init_checkpoint", self.config.init_checkpoint)

    def validate(self) -> trainer.RunPlan:
        """The pretrained start, the labels, the tokenizer and every split the run needs, read and
        checked before any model is built."""
        config, data = self.config, self.config.data
        self.pretrained = checkpoints.resolve_pretrained(config.init_checkpoint, config.bert_config_file,
                                                         config.vocab_file)
        check_pretrained(config, self.pretrained)
        self.processor = processor_from_config(data)
        self.labels = self.processor.get_labels()
        check_labels(config, self.pretrained, self.labels)
        self.tokenizer = Tokenizer(self.pretrained.vocab_file, config.do_lower_case)
        reads = {"train": (config.do_train, self.processor.get_train_examples),
                 "dev": (config.do_eval or config.do_train or self.exporting, self.processor.get_dev_examples),
                 "test": (config.do_predict, self.processor.get_test_examples)}
        for split, (needed, read) in reads.items():
            if needed:
                self.examples[split] = validation.non_empty(read(data.data_dir), data.describe(split))
                self.features[split] = pipeline.convert_examples_to_features(
                    self.examples[split], self.tokenizer, self.labels, config.max_seq_length)
        split, examples = next(iter(self.examples.items()))
        check_casing(self.tokenizer, [e.text_a for e in examples],
                     data.split_file(split) or f"the tfds {split} split")
        self.pooling = config.classifier_pooling or self.pretrained.classifier_pooling or "cls"
        return trainer.RunPlan(
            data_files=[data.split_file("train"), data.split_file("dev")] if config.do_train else [],
            model_config={**self.pretrained.config.to_dict(), "labels": self.labels,
                          "classifier_pooling": self.pooling},
            inputs={"data_dir": data.data_dir, "init_checkpoint": config.init_checkpoint,
                    "bert_config_file": config.bert_config_file, "vocab_file": config.vocab_file},
            train=config.do_train, evaluate=config.do_eval, predict=config.do_predict, export=self.exporting)

    def build_model(self) -> None:
        model = BertClassifier(build_encoder(self.pretrained.config), num_labels=len(self.labels),
                               pooling=self.pooling)
        self.models, self.eval_model = {"model": model}, model

    def initialize(self) -> None:
        if self.pretrained.weights:
            checkpoints.restore_weights(self.eval_model, self.pretrained)
        else:
            logging.info("No init_checkpoint: training from a random initialisation of %s",
                         self.config.bert_config_file)

    def schedule(self) -> trainer.Schedule:
        multipliers = None
        if self.config.layerwise_lr_decay != 1.0:
            from bertdistill.training.optimization import layerwise_lr_multipliers

            multipliers = layerwise_lr_multipliers(self.eval_model.trainable_variables,
                                                   self.eval_model.encoder.config.num_hidden_layers,
                                                   self.config.layerwise_lr_decay)
        logging.info("Training on %d examples", len(self.features["train"]))
        return trainer.Schedule(output_dir=self.config.run.output_dir, lr_multipliers=multipliers,
                                evaluate=self.config.do_eval)

    def build_inputs(self, split: str, *, epoch: int = 0, batch_size: int | None = None) -> tf.data.Dataset:
        config = self.config
        if split == "train":
            return pipeline.make_dataset(self.features["train"], batch_size=config.train.train_batch_size,
                                         is_training=True, seed=config.run.seed + epoch,
                                         max_seq_length=config.max_seq_length, static_padding=config.train.use_xla)
        default = config.train.predict_batch_size if split == "test" else config.train.eval_batch_size
        return pipeline.make_dataset(self.features[split], batch_size=batch_size or default, is_training=False,
                                     static_padding=config.train.use_xla, max_seq_length=config.max_seq_length)

    def steps_per_epoch(self) -> int:
        return pipeline.num_batches(self.features["train"], batch_size=self.config.train.train_batch_size,
                                    is_training=True, max_seq_length=self.config.max_seq_length)

    def trained_step(self) -> int:
        """After training: the step of the best dev model, else of the last. Without training:
        the model trained in the run folder (best, else latest checkpoint), else a fine-tuned
        `init_checkpoint`, loaded."""
        output_dir = self.config.run.output_dir
        best = trainer.read_best(output_dir)
        if self.config.do_train:
            return best["global_step"] if best else runner.num_train_steps(self.steps_per_epoch(),
                                                                          self.config.train.num_train_epochs)
        if trainer.restore_best_weights(self.eval_model, output_dir):
            logging.info("Using the best dev model of %s (step %d)", output_dir, best["global_step"])
            return best["global_step"]
        step = trainer.restore_from_checkpoint(self.eval_model, os.path.join(output_dir, "checkpoints"))
        if step is not None:
            logging.info("Using the latest checkpoint of %s (step %d)", output_dir, step)
            return step
        if self.config.init_checkpoint and "output_weights" in self.pretrained.weights:
            logging.info("Using the fine-tuned model %s", self.pretrained.source)
            return 0
        raise UserError(f"{field('output_dir')}={output_dir} holds no trained model and {field('init_checkpoint')} "
                        f"is not a fine-tuned classifier: add {field('do_train')}, or pass an export folder as "
                        f"{field('init_checkpoint')}")

    def num_examples(self, split: str) -> int:
        return len(self.features[split])

    def dev_examples(self) -> Sequence:
        return self.examples["dev"]

    def export(self, folder: str, sample: dict[str, np.ndarray]) -> None:
        """Hugging Face files, SavedModel, ONNX, INT8 ONNX and labels (`export.export_bert_classifier`)."""
        config = self.config
        export.export_bert_classifier(
            self.eval_model, folder, vocab_file=self.tokenizer.vocab_file, labels=self.labels,
            do_lower_case=config.do_lower_case, sample=sample,
            info={"model": "bert_classifier", "task_name": config.data.task_name, **self.processor.input_record(),
                  "max_seq_length": config.max_seq_length, "best": trainer.read_best(config.run.output_dir)},
            int8_keep_float=config.export.int8_keep_float)
