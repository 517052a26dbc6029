"""Tiny export folders shared by the predictor and server tests: a BERT classifier (through
`export_bert_classifier`) and a BiLSTM student (the folder `distil_lstm/main.py export_student`
writes), each with its Keras model's own probabilities for checking the exported ones.

Built once per test process (both test modules ask for them)."""
from __future__ import annotations

import dataclasses
import json
import os

import keras
import numpy as np

from bertdistill import export
from bertdistill.export_format import bert_features, pad
from bertdistill.bert import BertClassifier, BertEncoder
from bertdistill.tokenization import Tokenizer
from bertdistill.words import PAD
from tests.bert_fixtures import tiny_batch, tiny_config, write_vocab

BERT_MAX_SEQ_LENGTH = 8
LSTM_MAX_SEQ_LENGTH = 6
LABELS = ["neg", "pos"]
TEXTS = ["the movie was great", "bad plot", "not good , dull film", "a fun film", "The Movie Was Not Bad",
         "plots", "", "the movie was fun but the plot was dull and the film was not good at all ."]


@dataclasses.dataclass
class TinyExport:
    folder: str
    model: keras.Model
    encode: object  # texts -> padded features the Keras model takes

    def keras_probabilities(self, texts) -> np.ndarray:
        logits = keras.ops.convert_to_numpy(self.model(self.encode(texts), training=False))
        return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


def build_bert(root) -> TinyExport:
    keras.utils.set_random_seed(1)
    vocab = write_vocab(root / "vocab.txt")
    # A wide initialisation so that different texts get clearly different probabilities.
    model = BertClassifier(BertEncoder(tiny_config(initializer_range=0.5)), num_labels=2)
    folder = str(root / "bert" / "export")
    export.export_bert_classifier(model, folder, vocab_file=vocab, labels=LABELS, do_lower_case=True,
                                  sample=tiny_batch(), info={"model": "bert_classifier", "task_name": "sst-2",
                                                             "max_seq_length": BERT_MAX_SEQ_LENGTH})
    tokenizer = Tokenizer(vocab, True)

    def encode(texts):
        return bert_features(*tokenizer.encode_batch(texts, max_seq_length=BERT_MAX_SEQ_LENGTH), tokenizer.pad_id)

    return TinyExport(folder, model, encode)


def build_bilstm(root) -> TinyExport:
    """The folder layout of `distil_lstm/main.py export_student` (which reads its flags, so is not called)."""
    from distil_lstm.model import INT8_OP_TYPES, build_bilstm_classifier
    from distil_lstm.vocab import WordVocab

    keras.utils.set_random_seed(2)
    vocab = WordVocab.build(TEXTS[:5] + ["good fun great"], do_lower_case=True)
    model_args = {"embedding_dim": 8, "hidden_size": 8, "dense_size": 8, "dropout": 0.0, "pooling": "max"}
    model = build_bilstm_classifier(len(vocab), len(LABELS), **model_args)
    for weight in model.weights:  # larger weights: clearly different probabilities per text
        weight.assign(weight * 4)
    config = {"model": "bilstm_classifier", "vocab_size": len(vocab), "num_labels": len(LABELS), **model_args,
              "do_lower_case": True, "max_seq_length": LSTM_MAX_SEQ_LENGTH}

    def write_files(folder):
        vocab.save(os.path.join(folder, "vocab.txt"))
        for name, content in (("config.json", config), ("labels.json", LABELS)):
            with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=2)

    def encode(texts):
        return {"input_ids": pad([vocab.encode(text, LSTM_MAX_SEQ_LENGTH) for text in texts], vocab.ids[PAD])}

    folder = str(root / "lstm" / "export")
    export.export_folder(model, folder, sample=encode(TEXTS), write_files=write_files, input_names=("input_ids",),
                         int8_op_types=INT8_OP_TYPES,
                         info={**config, "labels": LABELS, "task_name": "sst-2", "mode": "train"})
    return TinyExport(folder, model, encode)


_BUILT: dict[str, TinyExport] = {}


def tiny_exports(tmp_path_factory) -> dict[str, TinyExport]:
    """{"bert": ..., "lstm": ...}, built on first use."""
    if not _BUILT:
        root = tmp_path_factory.mktemp("exports")
        _BUILT.update(bert=build_bert(root), lstm=build_bilstm(root))
    return _BUILT
