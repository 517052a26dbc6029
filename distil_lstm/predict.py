"""Raw text -> label with an exported BiLSTM student, through ONNX Runtime (no TensorFlow model code).

    python distil_lstm/predict.py --model_dir=outputs/lstm_distil/export "a gorgeous , witty film"
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from bertdistill.export import OnnxClassifier
from bertdistill.pipeline import pad_rows
from distil_lstm.vocab import WordVocab


def read_export_folder(folder: str) -> tuple[dict, list[str], WordVocab]:
    """The model config, labels and vocabulary of an export folder (checked against each other)."""
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    with open(os.path.join(folder, "labels.json"), encoding="utf-8") as f:
        labels = json.load(f)
    vocab = WordVocab.load(os.path.join(folder, "vocab.txt"), config["do_lower_case"])
    if len(vocab) != config["vocab_size"]:
        raise ValueError(f"{folder}/vocab.txt has {len(vocab)} tokens; config.json says {config['vocab_size']}")
    if len(labels) != config["num_labels"]:
        raise ValueError(f"{folder}/labels.json has {len(labels)} labels; config.json says {config['num_labels']}")
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
    flags.DEFINE_string("model_dir", None, "Export folder of distil_lstm/main.py.")
    flags.DEFINE_bool("quantized", False, "Use the INT8 model.")
    app.run(main)
