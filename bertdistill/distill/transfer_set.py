"""The transfer set: sentences (or sentence pairs) with a label and the teacher's logits, as a plain TSV.

Header `sentence<TAB>label<TAB>logit_<label 0>...`, or for pairs
`sentence<TAB>sentence_b<TAB>label<TAB>logit_<label 0>...`; one row per example. Written by
`generate_dataset.py`, read by the students' `distil` modes. `tinybert/data_augmentation.py`
writes the same file without logit columns (`sentence[<TAB>sentence_b]<TAB>label`);
`read_labelled_sentences` reads both. The header says whether the rows are pairs; a reader
compares that with what the teacher reads (`check_text_inputs`).

Shared by the scripts that build such files: `read_originals` (the training examples),
`shard_bounds` (contiguous shards); output files are written through
`bertdistill.files.atomic_output`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from bertdistill.data import data
from bertdistill.data.data import BadRows, DataFormatError, InputExample, split_lines
from bertdistill.errors import ConfigError, DataError, MissingFileError, field
from bertdistill.export_format import SINGLE_TEXT, TEXT_PAIR, describe_texts


def text_columns(pairs: bool) -> list[str]:
    return ["sentence", "sentence_b"] if pairs else ["sentence"]


def plain_header(pairs: bool = False) -> str:
    """The header of a file without logits (TinyBERT's augmented data)."""
    return "\t".join([*text_columns(pairs), "label"]) + "\n"


PLAIN_HEADER = plain_header()


def header(labels: Sequence[str], pairs: bool = False) -> str:
    return "\t".join([*text_columns(pairs), "label", *(f"logit_{label}" for label in labels)]) + "\n"


def format_rows(sentences: Sequence[str], labels: Sequence[str], logits: np.ndarray | None = None,
                sentences_b: Sequence[str] | None = None) -> str:
    """TSV lines for sentences (pairs with `sentences_b`) with their labels and, unless None, the
    teacher's logits ([n, num_labels])."""
    texts = zip(sentences) if sentences_b is None else zip(sentences, sentences_b)
    rows = logits if logits is not None else [()] * len(sentences)
    return "".join("\t".join([*pair, label, *(f"{v:.6g}" for v in row)]) + "\n"
                   for pair, label, row in zip(texts, labels, rows))


def text_inputs_of(examples: Sequence[InputExample]) -> tuple[str, ...]:
    """`TEXT_PAIR` when the examples are sentence pairs, else `SINGLE_TEXT` (a task's examples are all one or the other)."""
    return TEXT_PAIR if examples and examples[0].text_b is not None else SINGLE_TEXT


def check_text_inputs(examples: Sequence[InputExample], expected: tuple[str, ...] | None, what: str,
                      reader: str) -> None:
    """A `DataError` when `examples` (from `what`) are not the kind of text `reader` reads
    (`expected`: `SINGLE_TEXT`, `TEXT_PAIR`, or None when unknown)."""
    given = text_inputs_of(examples)
    if expected is not None and given != expected:
        raise DataError(f"{what} holds {describe_texts(given)} but {reader} reads {describe_texts(expected)}: "
                        f"use data of the task the teacher was trained on (see {field('text_b_column')})")


def _header_fields(path: str) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    return [h.strip() for h in first.split("\t")]


def _read_rows(path: str, labels: Sequence[str], expected: list[str], *, on_error: str,
               skipped: dict[str, int] | None) -> tuple[list[InputExample], list[list[float]]]:
    """Rows of a `sentence[, sentence_b], label[, logit...]` TSV with header `expected`; bad rows
    raise or are skipped and counted (`data.BadRows`)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"transfer set not found: {path}")
    texts = expected.index("label")
    examples, logits, bad = [], [], BadRows(path, on_error)
    for line_number, fields in split_lines(path, "\t", skip_header=True, header=expected):
        try:
            if isinstance(fields, str):
                raise ValueError(fields)
            if len(fields) != len(expected):
                raise ValueError(f"expected {len(expected)} columns, found {len(fields)}")
            sentences, label, values = fields[:texts], fields[texts], fields[texts + 1:]
            if not all(sentence.strip() for sentence in sentences):
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
        examples.append(InputExample(guid=f"transfer-{line_number - 1}", text_a=sentences[0],
                                     text_b=sentences[1] if len(sentences) > 1 else None, label=label))
        logits.append(row)
    bad.finish(len(examples), skipped)
    if not examples:
        raise DataError(f"{path} has no rows after its header: write it again")
    return examples, logits


def _is_pairs(path: str) -> bool:
    if not os.path.isfile(path):
        raise MissingFileError(f"transfer set not found: {path}")
    return _header_fields(path)[1:2] == ["sentence_b"]


def read_transfer_set(path: str, labels: Sequence[str], *, on_error: str = "raise",
                      skipped: dict[str, int] | None = None) -> tuple[list[InputExample], np.ndarray]:
    """Examples (pairs when the header has `sentence_b`) and float32 teacher logits
    [n, num_labels] from a transfer-set TSV.

    Raises `DataFormatError` (path:line) for a header that does not match `labels`, a wrong
    column count, an empty sentence, an unknown label or a logit that is not a finite number;
    with `on_error="skip"` a bad row is skipped instead, counted in `skipped[path]` and reported
    (as `data.DataProcessor` does; a file with no valid row is still refused).
    """
    expected = header(labels, _is_pairs(path)).rstrip("\n").split("\t")
    examples, logits = _read_rows(path, labels, expected, on_error=on_error, skipped=skipped)
    return examples, np.asarray(logits, np.float32).reshape(-1, len(labels))


def read_labelled_sentences(path: str, labels: Sequence[str], *, on_error: str = "raise",
                            skipped: dict[str, int] | None = None) -> tuple[list[InputExample], np.ndarray | None]:
    """Examples and teacher logits from a transfer set (as `read_transfer_set`), or examples and
    None from a plain `sentence[<TAB>sentence_b]<TAB>label` TSV (TinyBERT's augmented data: logits
    come later, from the teacher during training). The header line decides; errors name
    path:line; `on_error`/`skipped` as in `read_transfer_set`."""
    plain = plain_header(_is_pairs(path)).rstrip("\n").split("\t")
    if _header_fields(path) != plain:
        return read_transfer_set(path, labels, on_error=on_error, skipped=skipped)
    examples, _ = _read_rows(path, labels, plain, on_error=on_error, skipped=skipped)
    return examples, None


def read_originals(path: str, processor: data.DataProcessor, labels: Sequence[str], *, on_error: str = "raise",
                   skipped: dict[str, int] | None = None) -> list[InputExample]:
    """The training examples to augment: the train split of a task's folder, or a file read as a
    TSV/CSV task's `processor` reads its files (either way the task's labels must be `labels`),
    else a `sentence[<TAB>sentence_b]<TAB>label` TSV with the model's `labels` (pairs when the
    header has `sentence_b`). `on_error`/`skipped` as in `read_transfer_set`."""
    if not os.path.exists(path):
        raise MissingFileError(f"{field('input')} {path} does not exist: pass a training TSV (sentence<TAB>label) or a "
                               "task's data folder")
    if os.path.isdir(path) or isinstance(processor, data.TextClassificationProcessor):
        if processor.get_labels() != list(labels):
            raise ConfigError(f"the model's labels {list(labels)} differ from the task's {processor.get_labels()}: "
                              f"pass the {field('task_name')} (and {field('labels')}) the model was trained on")
        examples = processor.get_train_examples(path) if os.path.isdir(path) else processor.read_file(path, "train")
    else:
        processor = data.TextClassificationProcessor(
            list(labels), text_a_column="sentence", label_column="label", on_error=on_error,
            text_b_column="sentence_b" if "sentence_b" in _header_fields(path) else None)
        examples = processor.read_file(path, "train")
    if skipped is not None:
        skipped.update(processor.skipped)
    if not examples:
        raise DataError(f"{path} has no examples to augment")
    return examples


def shard_bounds(count: int, num_shards: int, shard_index: int) -> tuple[int, int]:
    """[start, end) of shard `shard_index` of `count` items in `num_shards` contiguous slices."""
    return count * shard_index // num_shards, count * (shard_index + 1) // num_shards


