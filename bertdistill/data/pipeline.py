"""Examples -> features -> `tf.data`: one input pipeline for training, evaluation and prediction.

Features are ragged (unpadded) token ids. Training batches are shuffled with a seed
(reshuffled each epoch, deterministically) and length-bucketed, and each batch is padded only
to its own longest sequence; evaluation and prediction keep the input order. Batches are
`(x, y)` with `x = {"input_ids", "attention_mask", "token_type_ids"}` (int32 [B, T]) and `y`
the int32 label ids, or `{"label_ids": ..., **extras}` when per-example extras (e.g. teacher
logits) are given.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from bertdistill.data.data import InputExample
from bertdistill.data.tokenization import Tokenizer

_ENCODE_CHUNK = 8192
TEACHER_PREFIX = "teacher_"  # of a teacher's own inputs in a batch (another vocabulary than the student's)


@dataclasses.dataclass
class Features:
    """Tokenized examples: ragged int32 ids, label ids (-1 when unlabeled), guids and the id
    their batches are padded with (the tokenizer's: 0 for BERT, 1 for MPNet; the word
    vocabulary's `[PAD]`, 0, for the BiLSTM), never assumed."""

    input_ids: tf.RaggedTensor
    token_type_ids: tf.RaggedTensor
    label_ids: np.ndarray
    guids: list[str]
    pad_id: int

    def __len__(self) -> int:
        return len(self.guids)

    @property
    def lengths(self) -> np.ndarray:
        return self.input_ids.row_lengths().numpy()

    def select(self, indices: np.ndarray) -> Features:
        """The examples at `indices`, in that order."""
        return Features(input_ids=tf.gather(self.input_ids, indices),
                        token_type_ids=tf.gather(self.token_type_ids, indices),
                        label_ids=self.label_ids[indices], guids=[self.guids[i] for i in indices],
                        pad_id=self.pad_id)


def convert_examples_to_features(examples: Sequence[InputExample], tokenizer: Tokenizer,
                                 label_list: Sequence[str], max_seq_length: int) -> Features:
    """Tokenizes `examples` in large batched calls; maps label strings to indices."""
    label_ids = label_ids_of(examples, label_list)
    has_pairs = any(e.text_b is not None for e in examples)
    ids, types = [], []
    for start in range(0, len(examples), _ENCODE_CHUNK):
        chunk = examples[start:start + _ENCODE_CHUNK]
        chunk_ids, chunk_types = tokenizer.encode_batch(
            [e.text_a for e in chunk], [e.text_b or "" for e in chunk] if has_pairs else None, max_seq_length)
        ids += chunk_ids
        types += chunk_types
    return Features(input_ids=to_ragged(ids), token_type_ids=to_ragged(types), label_ids=label_ids,
                    guids=[e.guid for e in examples], pad_id=tokenizer.pad_id)


def misaligned(teacher: Features, student: Features, id_map: np.ndarray) -> int | None:
    """Index of the first example whose two tokenizations (the teacher's and the student's
    vocabulary) are not the same word pieces position by position, or None: stage 1 of
    TinyBERT matches hidden states and attention position by position. `id_map` maps teacher
    ids to student ids (`tokenization.piece_id_map`)."""
    same_length = teacher.lengths == student.lengths
    if same_length.all():
        mapped = id_map[teacher.input_ids.flat_values.numpy()] == student.input_ids.flat_values.numpy()
        rows = np.repeat(np.arange(len(student)), student.lengths)
        same_length &= np.bincount(rows, weights=~mapped, minlength=len(student)) == 0
    bad = np.flatnonzero(~same_length)
    return int(bad[0]) if len(bad) else None


def label_ids_of(examples: Sequence[InputExample], label_list: Sequence[str]) -> np.ndarray:
    """int32 label indices of `examples` (-1 for unlabeled ones); an unknown label is an error."""
    label_map = {label: i for i, label in enumerate(label_list)}
    label_ids = np.empty(len(examples), np.int32)
    for i, example in enumerate(examples):
        if example.label is None:
            label_ids[i] = -1
        elif example.label in label_map:
            label_ids[i] = label_map[example.label]
        else:
            raise ValueError(f"example {example.guid}: unknown label {example.label!r}; expected one of {list(label_list)}")
    return label_ids


def to_ragged(rows: Sequence[Sequence[int]]) -> tf.RaggedTensor:
    """An int32 RaggedTensor [len(rows), None] from lists of ids."""
    lengths = np.fromiter(map(len, rows), np.int64, count=len(rows))
    flat = np.fromiter(itertools.chain.from_iterable(rows), np.int32, count=int(lengths.sum()))
    return tf.RaggedTensor.from_row_lengths(flat, lengths)


def default_bucket_boundaries(max_seq_length: int) -> list[int]:
    """Upper bounds (exclusive) of length buckets: 2 tokens wide up to 16, 4 up to 64, then 16."""
    bounds = [*range(4, 17, 2), *range(20, 65, 4), *range(80, max_seq_length + 1, 16)]
    return [b for b in bounds if b <= max_seq_length]


def num_batches(features: Features, *, batch_size: int, is_training: bool, max_seq_length: int | None = None,
                bucket_boundaries: Sequence[int] | None = None, drop_remainder: bool = False) -> int:
    """How many batches one pass of `make_dataset` yields (bucketing leaves one partial batch per bucket)."""
    if not is_training:
        counts = np.array([len(features)])
    else:
        boundaries = _boundaries(features, max_seq_length, bucket_boundaries)
        counts = np.bincount(np.searchsorted(boundaries, features.lengths, side="right"))
    return int((counts // batch_size).sum() if drop_remainder else (-(-counts // batch_size)).sum())


def _boundaries(features: Features, max_seq_length: int | None, bucket_boundaries: Sequence[int] | None) -> list[int]:
    if bucket_boundaries:
        return list(bucket_boundaries)
    return default_bucket_boundaries(max_seq_length or int(features.lengths.max(initial=1)) + 1)


def make_dataset(features: Features, *, batch_size: int, is_training: bool, seed: int = 0,
                 static_padding: bool = False, max_seq_length: int | None = None,
                 extras: dict[str, np.ndarray] | None = None, drop_remainder: bool = False,
                 bucket_boundaries: Sequence[int] | None = None,
                 teacher_features: Features | None = None) -> tf.data.Dataset:
    """Batches `features` as `(x, y)`, `input_ids` padded with `features.pad_id`; see the module docstring.

    `teacher_features` (the same examples in a teacher's own vocabulary, aligned: see
    `misaligned`) add `teacher_input_ids`, `teacher_attention_mask`, `teacher_token_type_ids` to x.

    Training shuffles (seeded, reshuffled each epoch) and buckets by length; otherwise the order
    is kept. `static_padding` pads every batch to `max_seq_length` (XLA/TPU shapes). No example
    is dropped or repeated unless `drop_remainder`; the dataset is not repeated.
    """
    if static_padding and not max_seq_length:
        raise ValueError("static_padding needs max_seq_length")
    for name, values in (extras or {}).items():
        if len(values) != len(features):
            raise ValueError(f"extra {name!r} has {len(values)} rows for {len(features)} examples")
    lengths = tf.constant(features.lengths, tf.int32)
    y = features.label_ids if extras is None else {"label_ids": features.label_ids, **extras}
    y = tf.nest.map_structure(tf.constant, y)
    width = max_seq_length if static_padding else None

    if teacher_features is not None and len(teacher_features) != len(features):
        raise ValueError(f"teacher features have {len(teacher_features)} rows for {len(features)} examples")

    def inputs(source: Features, indices, prefix: str = "") -> dict[str, tf.Tensor]:
        ids = tf.gather(source.input_ids, indices)
        shape = [batch_size if drop_remainder else None, width]
        return {prefix + "input_ids": ids.to_tensor(default_value=source.pad_id, shape=shape),
                prefix + "attention_mask": tf.ones_like(ids).to_tensor(shape=shape),
                prefix + "token_type_ids": tf.gather(source.token_type_ids, indices).to_tensor(shape=shape)}

    def gather_batch(indices):
        """One batch from example indices: rows padded to the batch's longest (or `width`)."""
        x = inputs(features, indices)
        if teacher_features is not None:
            x.update(inputs(teacher_features, indices, TEACHER_PREFIX))
        return x, tf.nest.map_structure(lambda v: tf.gather(v, indices), y)

    # Shuffling and bucketing move scalar indices; each batch is gathered and padded at once.
    dataset = tf.data.Dataset.range(len(features))
    if is_training:
        dataset = dataset.shuffle(max(len(features), 1), seed=seed, reshuffle_each_iteration=True)
        boundaries = _boundaries(features, max_seq_length, bucket_boundaries)
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=lambda i: tf.gather(lengths, i), bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1), drop_remainder=drop_remainder)
    else:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(gather_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def padding_efficiency(dataset: tf.data.Dataset) -> float:
    """Real tokens / padded tokens over one pass of `dataset`."""
    real = padded = 0
    for x, _ in dataset:
        mask = x["attention_mask"].numpy()
        real += int(mask.sum())
        padded += mask.size
    return real / max(padded, 1)


def predict_logits(model, features: Features, *, batch_size: int) -> np.ndarray:
    """`model`'s float32 outputs for `features`, in input order, computed over length-sorted
    batches (little padding: inference over mixed lengths runs several times faster)."""
    order = np.argsort(features.lengths, kind="stable")
    dataset = make_dataset(features.select(order), batch_size=batch_size, is_training=False)
    outputs = np.asarray(model.predict(dataset, verbose=0), np.float32)
    restored = np.empty_like(outputs)
    restored[order] = outputs
    return restored
