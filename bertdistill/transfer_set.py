"""The transfer set: sentences with a label and the teacher's logits, as a plain TSV.

Header `sentence<TAB>label<TAB>logit_<label 0>...`; one row per sentence. Written by
`generate_dataset.py`, read by the students' `distil` modes. `tinybert/data_augmentation.py`
writes the same file without logit columns (`sentence<TAB>label`); `read_labelled_sentences`
reads both.

Shared by the scripts that build such files: `read_originals` (the training sentences),
`shard_bounds` (contiguous shards); output files are written through
`bertdistill.files.atomic_output`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from bertdistill import data
from bertdistill.data import BadRows, DataFormatError, InputExample, split_lines
from bertdistill.errors import ConfigError, DataError, MissingFileError

PLAIN_HEADER = "sentence\tlabel\n"


def header(labels: Sequence[str]) -> str:
    return "\t".join(["sentence", "label", *(f"logit_{label}" for label in labels)]) + "\n"


def format_rows(sentences: Sequence[str], labels: Sequence[str], logits: np.ndarray) -> str:
    """TSV lines for sentences with their labels and teacher logits ([n, num_labels])."""
    return "".join(f"{sentence}\t{label}\t" + "\t".join(f"{v:.6g}" for v in row) + "\n"
                   for sentence, label, row in zip(sentences, labels, logits))


def _read_rows(path: str, labels: Sequence[str], expected: list[str], *, on_error: str,
               skipped: dict[str, int] | None) -> tuple[list[InputExample], list[list[float]]]:
    """Rows of a `sentence, label[, logit...]` TSV with header `expected`; bad rows raise or are
    skipped and counted (`data.BadRows`)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"transfer set not found: {path}")
    examples, logits, bad = [], [], BadRows(path, on_error)
    for line_number, fields in split_lines(path, "\t", skip_header=True, header=expected):
        try:
            if isinstance(fields, str):
                raise ValueError(fields)
            if len(fields) != len(expected):
                raise ValueError(f"expected {len(expected)} columns, found {len(fields)}")
            sentence, label, *values = fields
            if not sentence.strip():
                raise ValueError("empty sentence")
            if label not in labels:
                raise ValueError(f"unknown label {label!r}; expected one of {list(labels)}")
            try:
                row = [float(v) for v in values]
            except ValueError:
                raise ValueError(f"logits {values} are not numbers") from None
            if not np.isfinite(row).all():
                raise ValueError(f"logits {values} are not finite")
        except ValueError as e:
            bad.add(DataFormatError(path, line_number, str(e)))
            continue
        examples.append(InputExample(guid=f"transfer-{line_number - 1}", text_a=sentence, label=label))
        logits.append(row)
    bad.finish(len(examples), skipped)
    if not examples:
        raise DataError(f"{path} has no rows after its header: write it again")
    return examples, logits


def read_transfer_set(path: str, labels: Sequence[str], *, on_error: str = "raise",
                      skipped: dict[str, int] | None = None) -> tuple[list[InputExample], np.ndarray]:
    """Examples and float32 teacher logits [n, num_labels] from a transfer-set TSV.

    Raises `DataFormatError` (path:line) for a header that does not match `labels`, a wrong
    column count, an empty sentence, an unknown label or a logit that is not a finite number;
    with `on_error="skip"` a bad row is skipped instead, counted in `skipped[path]` and reported
    (as `data.DataProcessor` does; a file with no valid row is still refused).
    """
    expected = header(labels).rstrip("\n").split("\t")
    examples, logits = _read_rows(path, labels, expected, on_error=on_error, skipped=skipped)
    return examples, np.asarray(logits, np.float32).reshape(-1, len(labels))


def read_labelled_sentences(path: str, labels: Sequence[str], *, on_error: str = "raise",
                            skipped: dict[str, int] | None = None) -> tuple[list[InputExample], np.ndarray | None]:
    """Examples and teacher logits from a transfer set (as `read_transfer_set`), or examples and
    None from a plain `sentence<TAB>label` TSV (TinyBERT's augmented data: logits come later,
    from the teacher during training). The header line decides; errors name path:line;
    `on_error`/`skipped` as in `read_transfer_set`."""
    if not os.path.isfile(path):
        raise MissingFileError(f"transfer set not found: {path}")
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    if [h.strip() for h in first.split("\t")] != ["sentence", "label"]:
        return read_transfer_set(path, labels, on_error=on_error, skipped=skipped)
    examples, _ = _read_rows(path, labels, ["sentence", "label"], on_error=on_error, skipped=skipped)
    return examples, None


def read_originals(path: str, task_name: str, labels: Sequence[str], *, on_error: str = "raise",
                   skipped: dict[str, int] | None = None) -> list[InputExample]:
    """The training examples to augment: a task's train split from a folder, or a
    `sentence<TAB>label` TSV. Single sentences only; a folder's task must have `labels`.
    `on_error`/`skipped` as in `read_transfer_set`."""
    if not os.path.exists(path):
        raise MissingFileError(f"--input {path} does not exist: pass a training TSV (sentence<TAB>label) or a "
                               "task's data folder")
    if os.path.isdir(path):
        processor = data.get_processor(task_name, on_error=on_error)
        if processor.get_labels() != list(labels):
            raise ConfigError(f"the model's labels {list(labels)} differ from task {task_name}'s "
                              f"{processor.get_labels()}: pass the --task_name the model was trained on")
        examples = processor.get_train_examples(path)
    else:
        processor = data.TextClassificationProcessor(list(labels), text_a_column="sentence", label_column="label",
                                                     on_error=on_error)
        examples = processor.read_file(path, "train")
    if skipped is not None:
        skipped.update(processor.skipped)
    if not examples:
        raise DataError(f"{path} has no examples to augment")
    pairs = next((e.guid for e in examples if e.text_b is not None), None)
    if pairs is not None:
        raise DataError(f"{path}: augmentation takes single sentences; example {pairs} is a pair")
    return examples


def shard_bounds(count: int, num_shards: int, shard_index: int) -> tuple[int, int]:
    """[start, end) of shard `shard_index` of `count` items in `num_shards` contiguous slices."""
    return count * shard_index // num_shards, count * (shard_index + 1) // num_shards


