"""The BiLSTM student of Tang et al. (2019): word embeddings, one bidirectional LSTM layer,
pooling over time, a ReLU dense layer and float32 logits.

Input `input_ids` (int32 [batch, words], 0 = `[PAD]`); the padding mask comes from the
embedding (`mask_zero`), so the LSTM skips padding in both directions and the same sentence
gives the same logits alone or in a padded batch.
"""

from __future__ import annotations

import keras
import numpy as np

PACKAGE = "bertdistill"
POOLINGS = ("max", "mean", "last")


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
    embedding = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embeddings")
    x = embedding(input_ids)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    lstm = keras.layers.LSTM(hidden_size, return_sequences=pooling != "last", name="lstm")
    x = keras.layers.Bidirectional(lstm, name="bilstm")(x)
    if pooling != "last":
        x = MaskedPooling(pooling, name="pooling")(x)
    x = keras.layers.Dense(dense_size, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout, name="dense_dropout")(x)
    logits = keras.layers.Dense(num_labels, dtype="float32", name="logits")(x)
    model = keras.Model({"input_ids": input_ids}, logits, name="bilstm_classifier")
    if embeddings is not None:
        embedding.embeddings.assign(embeddings)
    return model
