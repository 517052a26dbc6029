"""The BiLSTM student: train on gold labels, distil from a teacher's logits, or test.

    python distil_lstm/main.py --mode=train  --data_dir=../shared/data/sst2 --output_dir=outputs/lstm
    python distil_lstm/main.py --mode=distil --data_dir=../shared/data/sst2 \\
        --augmented_file=outputs/augmented.tsv --output_dir=outputs/lstm_distil
    python distil_lstm/main.py --mode=test   --data_dir=../shared/data/sst2 --output_dir=outputs/lstm_distil

`train` fits on the task's train set; `distil` fits on a transfer set written by
`generate_dataset.py` (`<data_dir>/augmented.tsv` unless `--augmented_file`) with the loss
`--distill_loss` (see `bertdistill/distill.py`). Both keep the best model by dev accuracy and write
`<output_dir>/export`: SavedModel, ONNX, INT8 ONNX, `vocab.txt`, `config.json`, `labels.json`
and Keras weights (see `distil_lstm/predict.py` for raw text -> label). `test` evaluates that
export folder (or `--model_dir`) on dev, or predicts the test set (`--eval_split=test`).
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf
from absl import flags, logging

from bertdistill import (data, distill, errors, export, int8_gate, pipeline, runner, script_flags, trainer,
                         transfer_set, validation)
from bertdistill.augment import read_word_vectors
from bertdistill.distribute import is_chief, set_precision_policy
from bertdistill.errors import DataError, FlagError, MissingFileError, UserError
from bertdistill.export_format import CONFIG, KERAS_WEIGHTS, LABELS, VOCAB
from bertdistill.flags import on_error, processor_from_flags, split_file
from distil_lstm.model import INT8_OP_TYPES, build_bilstm_classifier
from distil_lstm.predict import read_export_folder
from distil_lstm.vocab import PAD, WORD_SPECIAL_TOKENS, WordVocab

script_flags.define_distil_lstm_flags()
FLAGS = flags.FLAGS

MODEL_ARGS = script_flags.BILSTM_MODEL_ARGS


def word_features(examples: list[data.InputExample], vocab: WordVocab | None, labels: list[str], *,
                  split: str = "") -> pipeline.Features | None:
    """Word ids of single-sentence examples, in the shared pipeline's `Features` (`vocab` None:
    only checks the examples)."""
    pairs = next((e.guid for e in examples if e.text_b is not None), None)
    if pairs is not None:
        raise DataError(f"the BiLSTM student classifies single sentences; {split + ' ' if split else ''}example "
                        f"{pairs} is a pair (--text_b_column): use run_classifier.py for pairs")
    if vocab is None:
        return None
    ids = vocab.encode_batch([e.text_a for e in examples], FLAGS.max_seq_length)
    return pipeline.Features(input_ids=ids, token_type_ids=ids.with_flat_values(0 * ids.flat_values),
                             label_ids=pipeline.label_ids_of(examples, labels), guids=[e.guid for e in examples],
                             pad_id=vocab.ids[PAD])


def make_dataset(features: pipeline.Features, batch_size: int, *, is_training: bool, seed: int = 0,
                 extras: dict[str, np.ndarray] | None = None):
    """The shared pipeline's batches, with only the input the BiLSTM takes."""
    dataset = pipeline.make_dataset(features, batch_size=batch_size, is_training=is_training, seed=seed,
                                    max_seq_length=FLAGS.max_seq_length, static_padding=FLAGS.use_xla,
                                    extras=extras)
    return dataset.map(lambda x, y: ({"input_ids": x["input_ids"]}, y))


def training_vocab(texts: list[str], *, reuse: bool, save: bool) -> WordVocab:
    """The run's vocabulary: the one a resumed run saved (`reuse`: only when `runner.prepare_run`
    found the folder's manifest to match), else built from the training texts and saved (`save`:
    on the chief; the other workers build the same one)."""
    path = os.path.join(FLAGS.output_dir, VOCAB)
    if reuse and os.path.exists(path):
        return WordVocab.load(path, FLAGS.do_lower_case)
    vocab = WordVocab.build(texts, min_count=FLAGS.min_count, max_size=FLAGS.max_vocab_size,
                            do_lower_case=FLAGS.do_lower_case)
    if len(vocab) <= len(WORD_SPECIAL_TOKENS):
        raise DataError(f"the training texts give an empty vocabulary (--min_count={FLAGS.min_count}, "
                        f"--max_vocab_size={FLAGS.max_vocab_size}): every word would be [UNK]")
    if save:
        vocab.save(path)
    return vocab


def initial_embeddings(vocab: WordVocab) -> np.ndarray | None:
    if not FLAGS.word_vectors:
        return None
    words, vectors = read_word_vectors(FLAGS.word_vectors, vocabulary=set(vocab.tokens))
    if vectors.shape[1] != FLAGS.embedding_dim:
        raise FlagError("word_vectors", f"{FLAGS.word_vectors} has {vectors.shape[1]}-d vectors; "
                             f"--embedding_dim={FLAGS.embedding_dim}")
    table, found = vocab.embedding_matrix(words, vectors, seed=FLAGS.seed)
    logging.info("Word vectors for %d of %d vocabulary words from %s", found, len(vocab), FLAGS.word_vectors)
    return table


def transfer_set_path() -> str:
    return FLAGS.augmented_file or os.path.join(FLAGS.data_dir or "", "augmented.tsv")


def read_training_data(processor: data.DataProcessor, labels: list[str]):
    """Train (or transfer-set) and dev examples, checked before anything is built; returns
    (train examples, extras or None, dev examples, the data files they came from)."""
    if FLAGS.mode == "distil":
        path = transfer_set_path()
        if not os.path.exists(path):
            raise MissingFileError(f"no transfer set at {path}: write one with generate_dataset.py "
                                   "or pass --augmented_file")
        train_examples, teacher_logits = transfer_set.read_transfer_set(path, labels, on_error=on_error(FLAGS))
        extras, train_file = {"teacher_logits": teacher_logits}, path
    else:
        train_examples, extras = processor.get_train_examples(FLAGS.data_dir), None
        train_file = split_file(FLAGS, "train")
        validation.non_empty(train_examples, train_file or "tfds train split")
    dev_examples = validation.non_empty(processor.get_dev_examples(FLAGS.data_dir),
                                        split_file(FLAGS, "dev") or "tfds dev split")
    for split, examples in (("train", train_examples), ("dev", dev_examples)):
        word_features(examples, None, labels, split=split)  # pairs refused before anything is built
    if FLAGS.word_vectors and not os.path.isfile(FLAGS.word_vectors):
        raise FlagError("word_vectors", f"--word_vectors={FLAGS.word_vectors} does not exist")
    return train_examples, extras, dev_examples, [train_file, split_file(FLAGS, "dev")]


def fit(strategy, processor: data.DataProcessor, labels: list[str]) -> None:
    """`train` or `distil`: fits (resuming), keeps the best-by-dev model and exports it."""
    train_examples, extras, dev_examples, data_files = read_training_data(processor, labels)
    status = runner.prepare_run(
        FLAGS, data_files=data_files,
        model_config={**{name: FLAGS[name].value for name in MODEL_ARGS}, "labels": labels},
        inputs={"data_dir": FLAGS.data_dir, "augmented_file": FLAGS.augmented_file,
                "word_vectors": FLAGS.word_vectors},
        chief=is_chief(strategy),
        ignore_flags=("temperature", "alpha") if FLAGS.mode == "distil" and FLAGS.distill_loss != "kd" else ())
    vocab = training_vocab([e.text_a for e in train_examples], reuse=status == "resumed", save=is_chief(strategy))
    train_features = word_features(train_examples, vocab, labels)
    dev_features = word_features(dev_examples, vocab, labels)
    steps_per_epoch = pipeline.num_batches(train_features, batch_size=FLAGS.train_batch_size, is_training=True,
                                           max_seq_length=FLAGS.max_seq_length)
    with strategy.scope():
        student = build_bilstm_classifier(len(vocab), len(labels), embeddings=initial_embeddings(vocab),
                                          **{name: FLAGS[name].value for name in MODEL_ARGS})
    task = trainer.ClassifierTask(student) if extras is None else distill.LogitsDistillationTask(
        student, FLAGS.distill_loss, temperature=FLAGS.temperature, alpha=FLAGS.alpha)
    logging.info("%s on %d examples, vocabulary %d, %d parameters", FLAGS.mode, len(train_features), len(vocab),
                 student.count_params())
    runner.train_from_flags(
        task, strategy, FLAGS, steps_per_epoch=steps_per_epoch,
        train_dataset_fn=lambda epoch: make_dataset(train_features, FLAGS.train_batch_size, is_training=True,
                                                    seed=FLAGS.seed + epoch, extras=extras),
        eval_dataset=make_dataset(dev_features, FLAGS.eval_batch_size, is_training=False))
    best = trainer.read_best(FLAGS.output_dir)
    if is_chief(strategy) and FLAGS.do_export:
        export_student(student, vocab, processor, dev_features, best)
        int8_gate.run_int8_gate_on_examples(os.path.join(FLAGS.output_dir, "export"), dev_examples,
                                            max_drop=FLAGS.int8_max_drop)


def export_student(student: keras.Model, vocab: WordVocab, processor: data.DataProcessor,
                   sample_features: pipeline.Features, best: dict | None) -> None:
    """<output_dir>/export: SavedModel, ONNX, INT8 ONNX, Keras weights, vocabulary, config, labels."""
    x, _ = next(iter(make_dataset(sample_features, 8, is_training=False)))
    labels = processor.get_labels()
    config = {"model": "bilstm_classifier", "vocab_size": len(vocab), "num_labels": len(labels),
              **{name: FLAGS[name].value for name in MODEL_ARGS}, "do_lower_case": FLAGS.do_lower_case,
              "max_seq_length": FLAGS.max_seq_length}

    def write_files(folder):
        trainer.save_model_weights(student, os.path.join(folder, KERAS_WEIGHTS))
        vocab.save(os.path.join(folder, VOCAB))
        for name, content in ((CONFIG, config), (LABELS, labels)):
            with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2)

    export.export_folder(student, os.path.join(FLAGS.output_dir, "export"),
                         sample={"input_ids": x["input_ids"].numpy()},
                         write_files=write_files, input_names=("input_ids",), int8_op_types=INT8_OP_TYPES,
                         info={**config, **processor.input_record(), "task_name": FLAGS.task_name, "mode": FLAGS.mode,
                               "distill_loss": FLAGS.distill_loss if FLAGS.mode == "distil" else None,
                               "best": best, "parameters": student.count_params()})


def load_student(folder: str) -> tuple[keras.Model, WordVocab, list[str], dict]:
    """The Keras student, vocabulary, labels and config of an export folder."""
    config, labels, vocab = read_export_folder(folder)
    student = build_bilstm_classifier(config["vocab_size"], config["num_labels"],
                                      **{name: config[name] for name in MODEL_ARGS})
    student.load_weights(os.path.join(folder, KERAS_WEIGHTS))
    return student, vocab, labels, config


def test(processor: data.DataProcessor) -> None:
    """Dev accuracy (eval_results.txt) or test-set probabilities (test_results.tsv) of an export folder."""
    folder = FLAGS.model_dir or os.path.join(FLAGS.output_dir, "export")
    if not FLAGS.model_dir and not os.path.isdir(folder):
        raise FlagError("model_dir", f"--output_dir={FLAGS.output_dir} holds no export/ to test: train it first "
                        "(--mode=train or distil) or pass --model_dir=<an export folder>")
    config, labels, vocab = read_export_folder(folder)
    if labels != processor.get_labels():
        raise UserError(f"{folder}/labels.json {labels} does not match task {FLAGS.task_name}'s "
                        f"{processor.get_labels()}")
    split = FLAGS.eval_split
    read = processor.get_dev_examples if split == "dev" else processor.get_test_examples
    examples = validation.non_empty(read(FLAGS.data_dir), split_file(FLAGS, split) or f"tfds {split} split")
    features = word_features(examples, vocab, labels)
    runner.prepare_run(FLAGS, inputs={"data_dir": FLAGS.data_dir, "model_dir": folder}, train=False)
    student, _, _, _ = load_student(folder)
    strategy = tf.distribute.get_strategy()
    if split == "dev":
        runner.evaluate_to_file(student, make_dataset(features, FLAGS.eval_batch_size, is_training=False),
                                FLAGS.output_dir, strategy, global_step=(config.get("best") or {}).get("global_step", 0),
                                num_examples=len(features))
    else:
        runner.predict_to_file(student, make_dataset(features, FLAGS.predict_batch_size, is_training=False),
                               FLAGS.output_dir, strategy)


def main(argv):
    del argv
    script_flags.validate_distil_lstm_flags(FLAGS)
    processor = processor_from_flags(FLAGS)
    strategy = runner.start(FLAGS)
    set_precision_policy(FLAGS.mixed_precision if FLAGS.mode != "test" else "float32")
    keras.utils.set_random_seed(FLAGS.seed)
    if FLAGS.mode == "test":
        test(processor)
    else:
        fit(strategy, processor, processor.get_labels())


if __name__ == "__main__":
    errors.run(main)
