"""The BiLSTM student as a `trainer.Task` driven by `runner.run` (`BiLstmConfig`): trained on
gold labels (`train`), distilled from a transfer set's teacher logits (`distil`, the loss
`distill_loss` of `bertdistill.distill.distill`), or an export folder evaluated on dev or predicting
the test set (`test`).

Training keeps the best model by dev accuracy and exports `<output_dir>/export`: SavedModel,
ONNX, INT8 ONNX, `vocab.txt`, `config.json`, `labels.json` and Keras weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from bertdistill.data import data, pipeline

from bertdistill.distill import distill, transfer_set

from bertdistill.export import export

from bertdistill.training import trainer, validation
from bertdistill.data.augment import read_word_vectors
from bertdistill.models.word_vectors import model_word_vectors, vector_size
from bertdistill.configs import BiLstmConfig, BiLstmModelConfig
from bertdistill.errors import DataError, FlagError, MissingFileError, UserError, field
from bertdistill.export_format import CONFIG, KERAS_WEIGHTS, LABELS, VOCAB
from distil_lstm.model import INT8_OP_TYPES, build_bilstm_classifier
from distil_lstm.predict import read_export_folder
from distil_lstm.vocab import PAD, WORD_SPECIAL_TOKENS, WordVocab


def word_features(examples: Sequence[data.InputExample], vocab: WordVocab | None, labels: Sequence[str],
                  max_seq_length: int, *, split: str = "") -> pipeline.Features | None:
    """Word ids of single-sentence examples, in the shared pipeline's `Features` (`vocab` None:
    only checks the examples)."""
    pairs = next((e.guid for e in examples if e.text_b is not None), None)
    if pairs is not None:
        raise DataError(f"the BiLSTM student classifies single sentences; {split + ' ' if split else ''}example "
                        f"{pairs} is a pair ({field('text_b_column')}): use run_classifier.py for pairs")
    if vocab is None:
        return None
    ids = vocab.encode_batch([e.text_a for e in examples], max_seq_length)
    return pipeline.Features(input_ids=ids, token_type_ids=ids.with_flat_values(0 * ids.flat_values),
                             label_ids=pipeline.label_ids_of(examples, labels), guids=[e.guid for e in examples],
                             pad_id=vocab.ids[PAD])


def load_student(folder: str) -> tuple[keras.Model, WordVocab, list[str], dict]:
    """The Keras student, vocabulary, labels and config of an export folder."""
    config, labels, vocab = read_export_folder(folder)
    student = build_bilstm_classifier(config["vocab_size"], config["num_labels"],
                                      **{item.name: config[item.name] for item in dataclasses.fields(BiLstmModelConfig)})
    student.load_weights(os.path.join(folder, KERAS_WEIGHTS))
    return student, vocab, labels, config


class BiLstmTask(trainer.Task):
    """The BiLSTM student's job (see the module docstring)."""

    def __init__(self, config: BiLstmConfig):
        self.config = config
        self.models, self.eval_model = {}, None
        self.examples: dict[str, Sequence[data.InputExample]] = {}
        self.features: dict[str, pipeline.Features] = {}
        self.extras: dict[str, np.ndarray] | None = None  # the transfer set's teacher logits
        self.vocab: WordVocab | None = None

    @property
    def testing(self) -> bool:
        return self.config.mode == "test"

    @property
    def precision(self) -> str:
        return "float32" if self.testing else self.config.run.mixed_precision

    def check(self) -> None:
        self.processor = data.processor_from_config(self.config.data)
        self.labels = self.processor.get_labels()

    def validate(self) -> trainer.RunPlan:
        return self._validate_test() if self.testing else self._validate_training()

    def transfer_set_path(self) -> str:
        return self.config.augmented_file or os.path.join(self.config.data.data_dir or "", "augmented.tsv")

    def _validate_training(self) -> trainer.RunPlan:
        """Train (or transfer-set) and dev examples, checked before anything is built."""
        config, data_config = self.config, self.config.data
        if config.mode == "distil":
            path = self.transfer_set_path()
            if not os.path.exists(path):
                raise MissingFileError(f"no transfer set at {path}: write one with generate_dataset.py "
                                       f"or pass {field('augmented_file')}")
            train_examples, teacher_logits = transfer_set.read_transfer_set(path, self.labels,
                                                                            on_error=data_config.on_error)
            self.extras, train_file = {"teacher_logits": teacher_logits}, path
        else:
            train_examples = self.processor.get_train_examples(data_config.data_dir)
            train_file = data_config.split_file("train")
            validation.non_empty(train_examples, train_file or "tfds train split")
        dev_examples = validation.non_empty(self.processor.get_dev_examples(data_config.data_dir),
                                            data_config.describe("dev"))
        self.examples = {"train": train_examples, "dev": dev_examples}
        for split, examples in self.examples.items():
            word_features(examples, None, self.labels, config.max_seq_length, split=split)  # pairs refused early
        if config.word_vectors:
            if not os.path.isfile(config.word_vectors):  # a model
                validation.model_path("word_vectors", config.word_vectors)
            size = vector_size(config.word_vectors)
            if size != config.model.embedding_dim:
                raise FlagError("embedding_dim", f"{field('word_vectors')}={config.word_vectors} gives {size}-d vectors; "
                                                 f"{field('embedding_dim')}={config.model.embedding_dim}")
        return trainer.RunPlan(
            data_files=[train_file, data_config.split_file("dev")],
            model_config={**config.model.to_dict(), "labels": self.labels},
            inputs={"data_dir": data_config.data_dir, "augmented_file": config.augmented_file,
                    "word_vectors": config.word_vectors},
            ignore_settings=("temperature", "alpha") if config.mode == "distil" and config.distill_loss != "kd" else (),
            export=config.export.do_export)

    def _validate_test(self) -> trainer.RunPlan:
        """The export folder and the split it is tested on."""
        config, data_config = self.config, self.config.data
        self.folder = config.model_dir or os.path.join(config.run.output_dir, "export")
        if not config.model_dir and not os.path.isdir(self.folder):
            raise FlagError("model_dir", f"{field('output_dir')}={config.run.output_dir} holds no export/ to test: "
                            f"train it first ({field('mode')}=train or distil) or pass {field('model_dir')}=<an "
                            "export folder>")
        self.export_config, labels, self.vocab = read_export_folder(self.folder)
        if labels != self.labels:
            raise UserError(f"{self.folder}/labels.json {labels} does not match task {data_config.task_name}'s "
                            f"{self.labels}")
        split = config.eval_split
        read = self.processor.get_dev_examples if split == "dev" else self.processor.get_test_examples
        self.examples[split] = validation.non_empty(read(data_config.data_dir), data_config.describe(split))
        self.features[split] = word_features(self.examples[split], self.vocab, labels, config.max_seq_length)
        return trainer.RunPlan(inputs={"data_dir": data_config.data_dir, "model_dir": self.folder}, train=False,
                               evaluate=split == "dev", predict=split == "test")

    def prepare(self, status: str) -> None:
        """The vocabulary (a resumed run's own, else built from the training texts and saved on the
        chief; the other workers build the same one), then the word ids."""
        if self.testing:
            return
        self.vocab = self.training_vocab([e.text_a for e in self.examples["train"]], reuse=status == "resumed",
                                         save=status != "worker")
        for split, examples in self.examples.items():
            self.features[split] = word_features(examples, self.vocab, self.labels, self.config.max_seq_length)

    def training_vocab(self, texts: list[str], *, reuse: bool, save: bool) -> WordVocab:
        config = self.config
        path = os.path.join(config.run.output_dir, VOCAB)
        if reuse and os.path.exists(path):
            return WordVocab.load(path, config.do_lower_case)
        vocab = WordVocab.build(texts, min_count=config.min_count, max_size=config.max_vocab_size,
                                do_lower_case=config.do_lower_case)
        if len(vocab) <= len(WORD_SPECIAL_TOKENS):
            raise DataError(f"the training texts give an empty vocabulary ({field('min_count')}={config.min_count}, "
                            f"{field('max_vocab_size')}={config.max_vocab_size}): every word would be [UNK]")
        if save:
            vocab.save(path)
        return vocab

    def initial_embeddings(self) -> np.ndarray | None:
        """The embedding table from `word_vectors`, a GloVe/word2vec file or a model
        (`bertdistill.models.word_vectors`); None: random initialisation."""
        config = self.config
        if not config.word_vectors:
            return None
        if os.path.isfile(config.word_vectors):
            words, vectors = read_word_vectors(config.word_vectors, vocabulary=set(self.vocab.tokens))
        else:  # a model: its input embeddings
            words, vectors = model_word_vectors(config.word_vectors, self.vocab.tokens[len(WORD_SPECIAL_TOKENS):])
        table, found = self.vocab.embedding_matrix(words, vectors, seed=config.run.seed)
        logging.info("Word vectors for %d of %d vocabulary words from %s", found, len(self.vocab), config.word_vectors)
        return table

    def build_model(self) -> None:
        config = self.config
        if self.testing:
            student, _, _, _ = load_student(self.folder)
            self.models, self.eval_model = {"model": student}, student
            return
        student = build_bilstm_classifier(len(self.vocab), len(self.labels), embeddings=self.initial_embeddings(),
                                          **config.model.to_dict())
        self.losses = trainer.ClassifierTask(student) if self.extras is None else distill.LogitsDistillationTask(
            student, config.distill_loss, temperature=config.temperature, alpha=config.alpha)
        self.models, self.eval_model = self.losses.models, student  # checkpoint names as the loss task's
        logging.info("%s on %d examples, vocabulary %d, %d parameters", config.mode, len(self.features["train"]),
                     len(self.vocab), student.count_params())

    def loss_terms(self, x, y):
        return self.losses.loss_terms(x, y)

    def build_inputs(self, split: str, *, epoch: int = 0, batch_size: int | None = None) -> tf.data.Dataset:
        """The shared pipeline's batches, with only the input the BiLSTM takes."""
        config = self.config
        if split == "train":
            dataset = pipeline.make_dataset(self.features["train"], batch_size=config.train.train_batch_size,
                                            is_training=True, seed=config.run.seed + epoch,
                                            max_seq_length=config.max_seq_length,
                                            static_padding=config.train.use_xla, extras=self.extras)
        else:
            default = config.train.predict_batch_size if split == "test" else config.train.eval_batch_size
            dataset = pipeline.make_dataset(self.features[split], batch_size=batch_size or default, is_training=False,
                                            max_seq_length=config.max_seq_length, static_padding=config.train.use_xla)
        return dataset.map(lambda x, y: ({"input_ids": x["input_ids"]}, y))

    def steps_per_epoch(self) -> int:
        return pipeline.num_batches(self.features["train"], batch_size=self.config.train.train_batch_size,
                                    is_training=True, max_seq_length=self.config.max_seq_length)

    def trained_step(self) -> int:
        if self.testing:
            return (self.export_config.get("best") or {}).get("global_step", 0)
        best = trainer.read_best(self.config.run.output_dir)
        return best["global_step"] if best else 0

    def num_examples(self, split: str) -> int:
        return len(self.features[split])

    def dev_examples(self) -> Sequence[data.InputExample]:
        return self.examples["dev"]

    def export(self, folder: str, sample: dict[str, np.ndarray]) -> None:
        """SavedModel, ONNX, INT8 ONNX, Keras weights, vocabulary, config and labels."""
        config, student = self.config, self.eval_model
        model_config = {"model": "bilstm_classifier", "vocab_size": len(self.vocab), "num_labels": len(self.labels),
                        **config.model.to_dict(), "do_lower_case": config.do_lower_case,
                        "max_seq_length": config.max_seq_length}

        def write_files(tmp: str) -> None:
            trainer.save_model_weights(student, os.path.join(tmp, KERAS_WEIGHTS))
            self.vocab.save(os.path.join(tmp, VOCAB))
            for name, content in ((CONFIG, model_config), (LABELS, self.labels)):
                with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                    json.dump(content, f, indent=2)

        export.export_folder(student, folder, sample={"input_ids": sample["input_ids"]}, write_files=write_files,
                             input_names=("input_ids",), int8_op_types=INT8_OP_TYPES,
                             info={**model_config, **self.processor.input_record(), "task_name": config.data.task_name,
                                   "mode": config.mode,
                                   "distill_loss": config.distill_loss if config.mode == "distil" else None,
                                   "best": trainer.read_best(config.run.output_dir),
                                   "parameters": student.count_params()})
