"""The BiLSTM student of Tang et al. (2019): word embeddings, one bidirectional LSTM layer,
pooling over time, a ReLU dense layer and float32 logits.

Input `input_ids` (int32 [batch, words], right-padded with 0 = `[PAD]`). The two directions
are plain (unmasked) LSTMs: the forward one reads the words before any padding, the backward
one reads each sentence's words reversed in place (`ReverseWords`), and pooling skips padding.
That is exactly a masked BiLSTM (the same sentence gives the same logits alone or in a padded
batch), but tf2onnx turns unmasked Keras LSTMs into ONNX `LSTM` operators instead of a `Loop`
of small ops, which makes ONNX Runtime about four times faster on a single sentence.
"""

from __future__ import annotations

import keras
import numpy as np

from bertdistill import PACKAGE
from bertdistill.data.words import BILSTM_POOLINGS as POOLINGS

INT8_OP_TYPES = ("MatMul", "Gemm", "LSTM", "Gather")  # the embedding table is most of the weights


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedPooling(keras.layers.Layer):
    """Max or mean over the real (unmasked) time steps of a [batch, time, features] sequence."""

    def __init__(self, mode: str = "max", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("max", "mean"):
            raise ValueError(f"pooling mode must be 'max' or 'mean', got {mode!r}")
        self.mode = mode
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            mask = keras.ops.ones(keras.ops.shape(inputs)[:2], dtype="bool")
        mask = keras.ops.expand_dims(mask, -1)
        if self.mode == "max":
            return keras.ops.max(keras.ops.where(mask, inputs, keras.ops.full_like(inputs, -1e4)), axis=1)
        weights = keras.ops.cast(mask, inputs.dtype)
        return keras.ops.sum(inputs * weights, axis=1) / keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return input_shape[0], input_shape[2]

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReverseWords(keras.layers.Layer):
    """Reverses the first `lengths[i]` steps of each right-padded sequence, leaving padding in place."""

    def call(self, sequences, lengths):
        steps = keras.ops.arange(keras.ops.shape(sequences)[1], dtype="int32")[None, :]
        lengths = keras.ops.expand_dims(lengths, 1)
        source = keras.ops.where(steps < lengths, lengths - 1 - steps, steps)
        return keras.ops.take_along_axis(sequences, keras.ops.expand_dims(source, -1), axis=1)

    def compute_output_shape(self, sequences_shape, lengths_shape):
        return sequences_shape


@keras.saving.register_keras_serializable(package=PACKAGE)
class FinalStates(keras.layers.Layer):
    """The final forward state (at step `length - 1`) and the final backward state (at step 0)
    of a [batch, time, 2 * units] BiLSTM output, concatenated."""

    def call(self, sequences, lengths):
        units = keras.ops.shape(sequences)[-1] // 2
        last = keras.ops.maximum(lengths - 1, 0)[:, None, None]
        forward = keras.ops.take_along_axis(sequences[..., :units], last, axis=1)[:, 0]
        return keras.ops.concatenate([forward, sequences[:, 0, units:]], axis=-1)

    def compute_output_shape(self, sequences_shape, lengths_shape):
        return sequences_shape[0], sequences_shape[2]


def build_bilstm_classifier(vocab_size: int, num_labels: int, *, embedding_dim: int = 300, hidden_size: int = 300,
                            dense_size: int = 400, dropout: float = 0.1, pooling: str = "max",
                            embeddings: np.ndarray | None = None) -> keras.Model:
    """A functional Keras BiLSTM classifier: `{"input_ids"}` -> float32 logits [batch, num_labels].

    `pooling`: `max` or `mean` over the BiLSTM outputs, or `last` (the final forward and
    backward states, concatenated, as in the paper). `embeddings` ([vocab_size, embedding_dim])
    initialises the embedding table (e.g. from word vectors).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if embeddings is not None and embeddings.shape != (vocab_size, embedding_dim):
        raise ValueError(f"embeddings have shape {embeddings.shape}, expected {(vocab_size, embedding_dim)}")
    input_ids = keras.Input(shape=(None,), dtype="int32", name="input_ids")
    words = keras.ops.not_equal(input_ids, 0)
    lengths = keras.ops.sum(keras.ops.cast(words, "int32"), axis=1)
    embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embeddings")
    x = embedding(input_ids)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    forward = keras.layers.LSTM(hidden_size, return_sequences=True, name="forward_lstm")(x)
    backward = keras.layers.LSTM(hidden_size, return_sequences=True, name="backward_lstm")(
        ReverseWords(name="reverse_words")(x, lengths))
    backward = ReverseWords(name="unreverse_words")(backward, lengths)
    x = keras.layers.Concatenate(name="bilstm")([forward, backward])
    if pooling == "last":
        x = FinalStates(name="final_states")(x, lengths)
    else:
        x = MaskedPooling(pooling, name="pooling")(x, mask=words)
    x = keras.layers.Dense(dense_size, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout, name="dense_dropout")(x)
    logits = keras.layers.Dense(num_labels, dtype="float32", name="logits")(x)
    model = keras.Model({"input_ids": input_ids}, logits, name="bilstm_classifier")
    if embeddings is not None:
        embedding.embeddings.assign(embeddings)
    return model
