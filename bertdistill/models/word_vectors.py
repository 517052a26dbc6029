"""Word vectors from a BERT-family model's input embeddings, to initialise a word-level student
(the BiLSTM) where no GloVe or word2vec file is at hand: a word's vector is the mean of its word
pieces' rows in the model's input-embedding table (the model's own tokenizer and casing). A word
with an unknown piece gets no vector."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from bertdistill.data.augment import read_word_vectors
from bertdistill.errors import ConfigError, DataError
from bertdistill.export_format import CONFIG
from bertdistill.models import model_packages
from bertdistill.models.checkpoints import resolve_pretrained
from bertdistill.models.encoders import config_from_json_file


def model_word_vectors(source: str, words: Iterable[str]) -> tuple[list[str], np.ndarray]:
    """The words of `words` that get a vector and their float32 vectors [n, hidden_size], from
    `source`: a short name (`minilm`, `mpnet`), a Hugging Face folder or an export folder."""
    pretrained = resolve_pretrained(source)
    table = pretrained.input_embeddings()
    if table is None:
        raise ConfigError(f"{pretrained.source} has no input-embedding table: it cannot give word vectors")
    tokenizer = pretrained.tokenizer()
    words = list(words)
    found, vectors = [], []
    for word, encoding in zip(words, tokenizer.backend.encode_batch(words, add_special_tokens=False)):
        if encoding.ids and tokenizer.unk_id not in encoding.ids:
            found.append(word)
            vectors.append(table[encoding.ids].mean(axis=0))
    if not found:
        raise ConfigError(f"{pretrained.source}: none of the {len(words)} words has a vector (every one holds a "
                          "word piece unknown to its vocabulary)")
    return found, np.stack(vectors).astype(np.float32)


def vector_size(source: str) -> int:
    """The dimension of the word vectors in `source` (a GloVe/word2vec file, or a model as in
    `model_word_vectors`), read without loading them."""
    if os.path.isfile(source):
        try:
            return read_word_vectors(source, max_words=1)[1].shape[1]
        except ValueError as e:
            raise DataError(str(e)) from None
    folder = model_packages.resolve_short_name(source) or source
    return config_from_json_file(os.path.join(folder, CONFIG)).hidden_size
