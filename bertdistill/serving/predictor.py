"""Any export folder -> raw text in, labels and probabilities out, with ONNX Runtime alone.

    from bertdistill.serving.predictor import Predictor
    predictor = Predictor("outputs/teacher/export", quantized=False, threads=2)
    predictor.predict(["a gorgeous , witty film"])   # [Prediction(label='1', probability=0.98, ...)]

The folder's `export_info.json` names the model kind and so the text encoding:

- `bert_classifier` (the teacher) and `tinybert`: WordPiece with the folder's `vocab.txt` and
  casing (`tokenizer_config.json`), `[CLS] text [SEP]` (a pair: `[CLS] text [SEP] text_b [SEP]`,
  token types 0 then 1; MPNet: `<s> text </s></s> text_b </s>`), truncated to the export's
  `max_seq_length` exactly as training did (`bertdistill.data.tokenization.Tokenizer.encode_batch`);
  inputs `input_ids`, `attention_mask`, `token_type_ids`;
- `bilstm_classifier`: the student's word vocabulary (`bertdistill.data.words`), the first
  `max_seq_length` words; input `input_ids`.

export_info's `text_inputs` says whether the model reads one text or a sentence pair
(`predict(texts, texts_b)`); a single text for a pair model, or a pair for a single-text
model, is refused with a `UserError`. Rows are padded with the vocabulary's pad id
(`export_format.pad`), as the training pipeline pads. Texts are encoded, sorted by length,
run in batches of at most `batch_size` (cut early where padding would exceed `max_padding` x the
real tokens) and put back in input order, so a list of mixed lengths costs little padding.
The probabilities are the model's own `probabilities` output.

This module imports no TensorFlow (nor any module that does): a server or a command-line
predictor starts in about a second and needs only onnxruntime, numpy and the tokenizers.
Folders that are not exports, or whose files disagree with each other (vocabulary size vs
config, labels vs the model's outputs, casing, inputs), are refused with a one-line `UserError`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence

import numpy as np

from bertdistill.errors import ConfigError, MissingFileError, UserError, field, read_json, shorten
from bertdistill.export_format import (BERT_INPUTS, COLUMNS, CONFIG, EXPORT_INFO, LABELS, MAX_SEQ_LENGTH, MODEL,
                                       MODEL_FILES, OUTPUTS, TEXT_PAIR, TOKENIZER_CONFIG, VOCAB, WORD_INPUTS,
                                       WORD_KINDS, OnnxModel, bert_features, describe_texts, pad, read_export_info,
                                       recommended_precision, run_folder_error, text_inputs)
from bertdistill.data.words import PAD, WordVocab

BERT_FILES = (CONFIG, VOCAB, LABELS)
WORD_FILES = (CONFIG, LABELS, VOCAB)
WORD_CONFIG_KEYS = {"vocab_size": int, "num_labels": int, "embedding_dim": int, "hidden_size": int, "dense_size": int,
                    "dropout": (int, float), "pooling": str, "do_lower_case": bool, "max_seq_length": int}
DEFAULT_BATCH_SIZE = 32
# Padded / real tokens allowed in one model call: bounding it speeds up calls of a few random-length
# texts; a long length-sorted list is as fast either way (its neighbours have nearly equal lengths).
# Measured: docs/speed.md, "The predictor's padding bound".
DEFAULT_MAX_PADDING = 1.1


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One text's answer: the top label, its probability and every label's probability."""

    label: str
    probability: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {"label": self.label, "probability": self.probability, "probabilities": dict(self.probabilities)}


class TokenRow(list):
    """One example's token ids (the list itself) and its token type ids (`type_ids`)."""

    def __init__(self, ids: Sequence[int], type_ids: Sequence[int]):
        super().__init__(ids)
        self.type_ids = type_ids


class WordPieceEncoder:
    """Text (or a pair) -> `[CLS] wordpieces [SEP]` ids (MPNet: `<s> wordpieces </s>`), truncated
    as training truncated, padded with the vocabulary's pad id (BERT, MPNet, TinyBERT)."""

    input_names = BERT_INPUTS
    kind = "wordpiece"

    def __init__(self, vocab_file: str, do_lower_case: bool, max_seq_length: int):
        from bertdistill.data.tokenization import Tokenizer

        try:
            self.tokenizer = Tokenizer(vocab_file, do_lower_case)
        except ValueError as e:
            raise ConfigError(f"{shorten(str(e))}; export the model again") from None
        self.max_seq_length = max_seq_length
        self.lock = threading.Lock()  # the Rust tokenizer's truncation setting is shared state

    def encode(self, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> list[TokenRow]:
        with self.lock:
            ids, types = self.tokenizer.encode_batch(texts, texts_b, self.max_seq_length)
        return [TokenRow(row, row_types) for row, row_types in zip(ids, types)]

    def features(self, rows: Sequence[TokenRow]) -> dict[str, np.ndarray]:
        return bert_features(rows, [row.type_ids for row in rows], self.tokenizer.pad_id)


class WordEncoder:
    """Text -> word ids of the BiLSTM student's vocabulary, the first `max_seq_length` words."""

    input_names = WORD_INPUTS
    kind = "words"

    def __init__(self, vocab: WordVocab, max_seq_length: int):
        self.vocab = vocab
        self.max_seq_length = max_seq_length

    def encode(self, texts: Sequence[str], texts_b: None = None) -> list[list[int]]:
        return [self.vocab.encode(text, self.max_seq_length) for text in texts]

    def features(self, rows: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        return {"input_ids": pad(rows, self.vocab.ids[PAD])}


def _labels(folder: str) -> list[str]:
    labels = read_json(os.path.join(folder, LABELS), "labels file")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, (str, int)) for x in labels):
        raise ConfigError(f"{shorten(folder)}/{LABELS} must be a non-empty JSON list of labels")
    return labels


def read_word_export(folder: str) -> tuple[dict, list, WordVocab]:
    """The model config, labels and vocabulary of a BiLSTM export folder, checked against each other.

    A folder that is not a BiLSTM export (a run folder, a missing file, a config key missing or
    wrongly typed, a vocabulary or label count that differs from the config) is a `UserError`
    naming what was expected."""
    if not os.path.isdir(folder):
        raise MissingFileError(f"{shorten(folder)} is not a folder: expected a BiLSTM export folder "
                               f"({', '.join(WORD_FILES)})")
    missing = [name for name in WORD_FILES if not os.path.exists(os.path.join(folder, name))]
    if missing:
        raise run_folder_error(folder) or MissingFileError(
            f"{shorten(folder)} is not a BiLSTM export folder: {', '.join(missing)} missing (expected "
            f"{', '.join(WORD_FILES)})")
    config = read_json(os.path.join(folder, CONFIG), "model config")
    if not isinstance(config, dict):
        raise ConfigError(f"{folder}/{CONFIG} must be a JSON object")
    for key, kind in WORD_CONFIG_KEYS.items():
        if key not in config:
            raise ConfigError(f"{folder}/{CONFIG}: missing key {key!r}: export the model again")
        if isinstance(config[key], bool) != (kind is bool) or not isinstance(config[key], kind):
            raise ConfigError(f"{folder}/{CONFIG}: key {key!r} has the wrong type "
                              f"({shorten(repr(config[key]), 60)})")
    labels = _labels(folder)
    try:
        vocab = WordVocab.load(os.path.join(folder, VOCAB), config["do_lower_case"])
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{folder}/{VOCAB}: {e}") from None
    if len(vocab) != config["vocab_size"]:
        raise ConfigError(f"{folder}/{VOCAB} has {len(vocab)} tokens; {CONFIG} says {config['vocab_size']}")
    if len(labels) != config["num_labels"]:
        raise ConfigError(f"{folder}/{LABELS} has {len(labels)} labels; {CONFIG} says {config['num_labels']}")
    if config["max_seq_length"] < 1:
        raise ConfigError(f"{folder}/{CONFIG}: max_seq_length must be positive, got {config['max_seq_length']}")
    return config, labels, vocab


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def read_bert_export(folder: str, info: dict) -> tuple[dict, list, bool, int]:
    """(config, labels, do_lower_case, max_seq_length) of a BERT / TinyBERT export folder,
    checked against each other and against `info` (its export_info)."""
    missing = [name for name in BERT_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise MissingFileError(f"{shorten(folder)} is not a complete {info[MODEL]} export: {', '.join(missing)} "
                               f"missing (expected {', '.join(BERT_FILES)}); export the model again")
    config = read_json(os.path.join(folder, CONFIG), "model config")
    if not isinstance(config, dict):
        raise ConfigError(f"{folder}/{CONFIG} must be a JSON object")
    for key in ("vocab_size", "max_position_embeddings"):
        if isinstance(config.get(key), bool) or not isinstance(config.get(key), int):
            raise ConfigError(f"{folder}/{CONFIG}: missing or non-integer key {key!r}; export the model again")
    labels = _labels(folder)
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and len(id2label) != len(labels):
        raise ConfigError(f"{folder}/{LABELS} has {len(labels)} labels; {CONFIG}'s id2label has "
                          f"{len(id2label)}")
    casing = [info.get("do_lower_case")]
    tokenizer_config = os.path.join(folder, TOKENIZER_CONFIG)
    if os.path.isfile(tokenizer_config):
        values = read_json(tokenizer_config, "tokenizer config")
        casing.append(values.get("do_lower_case") if isinstance(values, dict) else None)
    known = {value for value in casing if value is not None}
    if not known or not all(isinstance(value, bool) for value in known):
        raise ConfigError(f"{folder}: no do_lower_case (true/false) in {EXPORT_INFO} or {TOKENIZER_CONFIG}; "
                          "export the model again")
    if len(known) > 1:
        raise ConfigError(f"{folder}: {EXPORT_INFO} and {TOKENIZER_CONFIG} disagree on do_lower_case; "
                          "export the model again")
    tokens = _count_lines(os.path.join(folder, VOCAB))
    if tokens != config["vocab_size"]:
        raise ConfigError(f"{folder}/{VOCAB} has {tokens} tokens; {CONFIG} says vocab_size "
                          f"{config['vocab_size']}: the vocabulary does not belong to this model")
    max_seq_length = info[MAX_SEQ_LENGTH]  # an integer (export_format.check_export_info)
    if not 2 <= max_seq_length <= config["max_position_embeddings"]:
        raise ConfigError(f"{folder}/{EXPORT_INFO}: max_seq_length {max_seq_length} is outside 2.."
                          f"{config['max_position_embeddings']} (the model's max_position_embeddings)")
    return config, labels, known.pop(), max_seq_length


class Predictor:
    """An export folder's encoding, labels and ONNX model: `model.int8.onnx` when `quantized`,
    `model.onnx` when not, and by default (None) the model the export's INT8 gate recommends
    (`model.onnx` without a gate); `threads` is ONNX Runtime's intra-op thread count (0: all
    cores), `spin_wait` lets its idle threads spin (see `OnnxModel`).
    Thread-safe: concurrent calls are allowed (ONNX Runtime sessions are)."""

    def __init__(self, folder: str, *, quantized: bool | None = None, threads: int = 0,
                 batch_size: int = DEFAULT_BATCH_SIZE, max_padding: float = DEFAULT_MAX_PADDING,
                 spin_wait: bool = False):
        if batch_size < 1:
            raise UserError(f"batch_size must be positive, got {batch_size}")
        if max_padding < 1:
            raise UserError(f"max_padding must be at least 1 (padded / real tokens), got {max_padding}")
        if threads < 0:
            raise UserError(f"threads must be 0 (all cores) or more, got {threads}")
        self.folder = folder
        self.info = read_export_info(folder)
        self.kind = self.info[MODEL]
        if self.kind in WORD_KINDS:
            self.config, labels, vocab = read_word_export(folder)
            self.max_seq_length = self.config["max_seq_length"]
            self.do_lower_case = self.config["do_lower_case"]
            self.encoder = WordEncoder(vocab, self.max_seq_length)
        else:
            self.config, labels, self.do_lower_case, self.max_seq_length = read_bert_export(folder, self.info)
            self.encoder = WordPieceEncoder(os.path.join(folder, VOCAB), self.do_lower_case,
                                            self.max_seq_length)
        self.text_inputs = text_inputs(self.info)
        self.pairs = self.text_inputs == TEXT_PAIR
        self.labels = [str(label) for label in labels]
        if "labels" in self.info and [str(x) for x in self.info["labels"] or []] != self.labels:
            raise ConfigError(f"{folder}: {LABELS} {shorten(self.labels, 80)} and {EXPORT_INFO} "
                              f"{shorten(self.info['labels'], 80)} disagree; export the model again")
        if quantized is None:
            self.precision = recommended_precision(self.info)
        else:
            self.precision = "int8" if quantized else "float32"
        model_file = os.path.join(folder, MODEL_FILES[self.precision])
        if not os.path.isfile(model_file):
            raise MissingFileError(f"{shorten(folder)} has no {MODEL_FILES[self.precision]}"
                                   + (f"; drop {field('quantized')} or export with quantization" if quantized else
                                      "; export the model again"))
        self.model = OnnxModel(model_file, threads, spin_wait)
        # A graph may take fewer inputs than the encoder gives (MPNet's has no token_type_ids).
        if "input_ids" not in self.model.input_names or not set(self.model.input_names) <= set(self.encoder.input_names):
            raise ConfigError(f"{shorten(model_file)} takes inputs {self.model.input_names}; a {self.kind} export "
                              f"should take {list(self.encoder.input_names)}; export the model again")
        self.batch_size = batch_size
        self.max_padding = max_padding
        self.threads = threads
        self.run([""], [""] if self.pairs else None)  # checks the output width against the labels; warms up

    def encode(self, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> list[list[int]]:
        """Token ids of each text, or of each pair (`texts[i]`, `texts_b[i]`) for a model that reads
        pairs (truncated to `max_seq_length`), unpadded. A `UserError` when the model reads pairs
        and no `texts_b` are given, or reads single texts and `texts_b` are given."""
        if (texts_b is not None) != self.pairs:
            raise UserError(f"this model reads {describe_texts(self.text_inputs)}: "
                            + ("give each text its text_b" if self.pairs else "a second text (text_b) is not read"))
        for name, column in (("text", texts), ("text_b", texts_b or [])):
            for i, text in enumerate(column):
                if not isinstance(text, str):
                    raise UserError(f"{name} {i} is a {type(text).__name__}, not a string")
        if texts_b is not None and len(texts_b) != len(texts):
            raise UserError(f"{len(texts)} texts but {len(texts_b)} text_b: a pair needs both")
        return self.encoder.encode(list(texts), None if texts_b is None else list(texts_b))

    def run(self, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """`logits` and `probabilities` [len(texts), num_labels] in input order, computed over
        length-sorted batches of `batch_size`; `texts_b` as in `encode`."""
        return self.run_rows(self.encode(texts, texts_b))

    def run_rows(self, rows: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """`run` on rows already encoded by `encode` (a server encodes each request on its own, then
        runs several requests' rows together)."""
        out = {name: np.zeros((len(rows), len(self.labels)), np.float32) for name in OUTPUTS}
        for chosen in self.batches([len(row) for row in rows]):
            result = self.model.run(self.encoder.features([rows[i] for i in chosen]))
            width = result["probabilities"].shape[1]
            if width != len(self.labels):
                raise ConfigError(f"{shorten(self.model.path)} outputs {width} probabilities per text; labels.json "
                                  f"has {len(self.labels)} labels: the files do not belong together")
            for name in OUTPUTS:
                out[name][chosen] = result[name]
        return out

    def batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Indices of the texts of each model call: sorted by length, at most `batch_size` per call,
        and a new call whenever padding would exceed `max_padding` x the call's real tokens (one
        long text in a batch of short ones slows the whole batch more than a second call costs)."""
        order = np.argsort(np.asarray(lengths, np.int64), kind="stable")
        batches, start, real = [], 0, 0
        for end, index in enumerate(order):
            length = lengths[index]
            count = end - start
            if count and (count >= self.batch_size or length * (count + 1) > self.max_padding * (real + length)):
                batches.append(order[start:end])
                start, real = end, 0
            real += length
        if start < len(order):
            batches.append(order[start:])
        return batches

    def logits(self, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> np.ndarray:
        return self.run(texts, texts_b)["logits"]

    def probabilities(self, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> np.ndarray:
        """The model's `probabilities` output [len(texts), num_labels]."""
        return self.run(texts, texts_b)["probabilities"]

    def predict(self, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> list[Prediction]:
        """Label, its probability and every label's probability, for each text (or pair)."""
        return self.to_predictions(self.probabilities(texts, texts_b))

    def logits_of(self, items: Sequence[str | tuple[str, str]]) -> np.ndarray:
        """`logits` of items that are texts, or (text, text_b) pairs for a pair model (for callers
        that pass examples around as one list, such as `bertdistill.serving.speed`)."""
        if items and all(isinstance(item, tuple) for item in items):  # `encode` refuses pairs for a single-text model
            return self.logits([item[0] for item in items], [item[1] for item in items])
        return self.logits(items)

    def to_predictions(self, probabilities: np.ndarray) -> list[Prediction]:
        top = probabilities.argmax(axis=1) if len(probabilities) else []
        return [Prediction(label=self.labels[best], probability=float(row[best]),
                           probabilities={label: float(p) for label, p in zip(self.labels, row)})
                for best, row in zip(top, probabilities)]

    def metadata(self) -> dict:
        """What a client needs to know: model kind, labels, texts read, inputs, max length, precision."""
        return {"model": self.kind, "labels": list(self.labels), "max_seq_length": self.max_seq_length,
                "precision": self.precision, "model_file": os.path.basename(self.model.path),
                "text_encoding": self.encoder.kind, "do_lower_case": self.do_lower_case,
                "text_inputs": list(self.text_inputs), "columns": self.info.get(COLUMNS),
                "inputs": list(self.model.input_names), "outputs": list(OUTPUTS),
                "task_name": self.info.get("task_name")}
