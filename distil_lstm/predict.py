"""Raw text -> label with an exported BiLSTM student, through ONNX Runtime (no TensorFlow model code).

    python distil_lstm/predict.py --model_dir=outputs/lstm_distil/export "a gorgeous , witty film"
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from bertdistill.errors import ConfigError, MissingFileError, read_json, shorten
from bertdistill.export import OnnxClassifier
from bertdistill.pipeline import pad_rows
from distil_lstm.vocab import WordVocab


CONFIG_KEYS = {"vocab_size": int, "num_labels": int, "embedding_dim": int, "hidden_size": int, "dense_size": int,
               "dropout": (int, float), "pooling": str, "do_lower_case": bool, "max_seq_length": int}
EXPORT_FILES = ("config.json", "labels.json", "vocab.txt")


def read_export_folder(folder: str) -> tuple[dict, list[str], WordVocab]:
    """The model config, labels and vocabulary of an export folder (checked against each other).

    A folder that is not a BiLSTM export (a run folder, a missing file, a config key missing or
    wrongly typed) is a `UserError` naming what was expected."""
    if not os.path.isdir(folder):
        raise MissingFileError(f"{shorten(folder)} is not a folder: expected a BiLSTM export folder "
                               f"({', '.join(EXPORT_FILES)})")
    missing = [name for name in EXPORT_FILES if not os.path.exists(os.path.join(folder, name))]
    if missing:
        inner = os.path.join(folder, "export")
        if os.path.exists(os.path.join(inner, "config.json")):
            raise MissingFileError(f"{shorten(folder)} is a run folder, not an export folder: pass {shorten(inner)}")
        raise MissingFileError(f"{shorten(folder)} is not a BiLSTM export folder: {', '.join(missing)} missing "
                               f"(expected {', '.join(EXPORT_FILES)})")
    config = read_json(os.path.join(folder, "config.json"), "model config")
    if not isinstance(config, dict):
        raise ConfigError(f"{folder}/config.json must be a JSON object")
    for key, kind in CONFIG_KEYS.items():
        if key not in config:
            raise ConfigError(f"{folder}/config.json: missing key {key!r}: export the model again")
        if isinstance(config[key], bool) != (kind is bool) or not isinstance(config[key], kind):
            raise ConfigError(f"{folder}/config.json: key {key!r} has the wrong type "
                              f"({shorten(repr(config[key]), 60)})")
    labels = read_json(os.path.join(folder, "labels.json"), "labels file")
    if not isinstance(labels, list) or not labels:
        raise ConfigError(f"{folder}/labels.json must be a non-empty JSON list of labels")
    try:
        vocab = WordVocab.load(os.path.join(folder, "vocab.txt"), config["do_lower_case"])
    except ValueError as e:
        raise ConfigError(f"{folder}/vocab.txt: {e}") from None
    if len(vocab) != config["vocab_size"]:
        raise ConfigError(f"{folder}/vocab.txt has {len(vocab)} tokens; config.json says {config['vocab_size']}")
    if len(labels) != config["num_labels"]:
        raise ConfigError(f"{folder}/labels.json has {len(labels)} labels; config.json says {config['num_labels']}")
    return config, labels, vocab


class TextClassifier:
    """An export folder's vocabulary, labels and ONNX model (`model.onnx`, or `model.int8.onnx`)."""

    def __init__(self, folder: str, *, quantized: bool = False, intra_op_threads: int = 0):
        self.config, self.labels, self.vocab = read_export_folder(folder)
        self.model = OnnxClassifier(os.path.join(folder, "model.int8.onnx" if quantized else "model.onnx"),
                                    intra_op_threads)

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Word ids [len(texts), longest], padded with 0."""
        return {"input_ids": pad_rows([self.vocab.encode(text, self.config["max_seq_length"]) for text in texts])}

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.predict(self.encode(texts))

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The predicted label of each text."""
        return [self.labels[i] for i in self.logits(texts).argmax(axis=1)]


def main(argv):
    if not flags.FLAGS.model_dir or len(argv) < 2:
        raise app.UsageError("usage: predict.py --model_dir=EXPORT_DIR TEXT [TEXT ...]")
    classifier = TextClassifier(flags.FLAGS.model_dir, quantized=flags.FLAGS.quantized)
    probabilities = np.exp(classifier.logits(argv[1:]))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    for text, row in zip(argv[1:], probabilities):
        print(f"{classifier.labels[int(row.argmax())]}\t{row.max():.4f}\t{text}")


if __name__ == "__main__":
    from bertdistill import errors

    flags.DEFINE_string("model_dir", None, "Export folder of distil_lstm/main.py.")
    flags.DEFINE_bool("quantized", False, "Use the INT8 model.")
    errors.run(main)
