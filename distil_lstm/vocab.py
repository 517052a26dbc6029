"""Word-level vocabulary of the BiLSTM student for training (see `bertdistill/data/words.py`).

Ids 0, 1, 2 are `[PAD]`, `[UNK]`, `[MASK]` (the augmented transfer set masks words); the rest
are the training words by descending count (ties alphabetical), at least `min_count` times,
at most `max_size` entries in all. Saved as `vocab.txt`, one token per line, line = id.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from bertdistill.data.pipeline import to_ragged
from bertdistill.data.words import PAD, WORD_SPECIAL_TOKENS
from bertdistill.data.words import WordVocab as _WordVocab


class WordVocab(_WordVocab):
    """`bertdistill.data.words.WordVocab` (tokenize, build, save, load, encode; no TensorFlow) plus what
    training needs: ragged batches for the tf.data pipeline and an embedding table."""

    def encode_batch(self, texts: Sequence[str], max_length: int | None = None) -> tf.RaggedTensor:
        """Ragged int32 word ids [len(texts), None]."""
        return to_ragged([self.encode(text, max_length) for text in texts])

    def embedding_matrix(self, words: Sequence[str], vectors: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, int]:
        """An embedding table [len(self), dim] with the given word vectors where a token has one
        (uniform in +-0.05 elsewhere, zeros for `[PAD]`); returns it and how many tokens were found."""
        rng = np.random.default_rng(seed)
        table = rng.uniform(-0.05, 0.05, (len(self), vectors.shape[1])).astype(np.float32)
        table[self.ids[PAD]] = 0.0
        found = 0
        for word, vector in zip(words, vectors):
            index = self.ids.get(word)
            if index is not None and index >= len(WORD_SPECIAL_TOKENS):
                table[index] = vector
                found += 1
        return table, found
