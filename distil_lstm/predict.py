"""Raw text -> label with an exported BiLSTM student: a thin alias of the library predictor.

    python distil_lstm/predict.py --model_dir=outputs/lstm_distil/export "a gorgeous , witty film"

is `python predict.py ...` (the top-level predictor, which answers every kind of export folder
the same way). `TextClassifier` and `read_export_folder` stay for the code that imports them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np

from bertdistill.serving.predictor import Predictor, read_word_export

ONE_CALL = 1 << 30  # batch size: all texts of a call at once


def read_export_folder(folder: str):
    """The model config, labels and vocabulary (`distil_lstm.vocab.WordVocab`) of a BiLSTM export
    folder, checked against each other (`bertdistill.serving.predictor.read_word_export`)."""
    from distil_lstm.vocab import WordVocab  # TensorFlow: only for the training code that asks for it

    config, labels, vocab = read_word_export(folder)
    return config, labels, WordVocab(vocab.tokens, vocab.do_lower_case)


class TextClassifier(Predictor):
    """A `Predictor` with the old names: `predict` returns label strings, `logits` the logits.
    As before, each call is one ONNX Runtime call (no splitting into length-sorted batches) and
    ONNX Runtime's threads spin between calls (the library defaults differ), so
    `benchmarks/student_speed.py` measures what it measured."""

    def __init__(self, folder: str, *, quantized: bool = False, intra_op_threads: int = 0,
                 batch_size: int = ONE_CALL, max_padding: float = float("inf"), spin_wait: bool = True):
        super().__init__(folder, quantized=quantized, threads=intra_op_threads, batch_size=batch_size,
                         max_padding=max_padding, spin_wait=spin_wait)

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The predicted label of each text."""
        return [self.labels[i] for i in self.probabilities(texts).argmax(axis=1)]

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.run(texts)["logits"]


if __name__ == "__main__":
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(repo, "predict.py")
    os.execv(sys.executable, [sys.executable, script, *sys.argv[1:]])
